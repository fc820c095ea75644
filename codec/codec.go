package codec

import (
	"errors"
	"fmt"
)

// Magic is the first two bytes of every binary frame (0xCDC2, little-endian).
const Magic uint16 = 0xCDC2

// Version is the only protocol version.
const Version uint8 = 1

// MaxMessageSize is the largest frame or JSON message accepted: 16 MiB.
const MaxMessageSize = 16 << 20

// HeaderSize is the size of the common header of every binary frame.
const HeaderSize = 24

// BatchHeaderSize is the size of a cdc_batch frame's fixed header, before
// the source id: what PeekBatchHeader needs.
const BatchHeaderSize = batchFixedSize

// batchFixedSize is the size of a cdc_batch frame before the source id.
const batchFixedSize = 40

// entryFixedSize is the size of an entry before its variable fields.
const entryFixedSize = 29

// MessageType is the type byte of a binary frame.
type MessageType uint8

// Message types of the binary header.
const (
	TypeCDCBatch     MessageType = 1
	TypeAck          MessageType = 2
	TypeNack         MessageType = 3
	TypeConnect      MessageType = 4
	TypeHeartbeat    MessageType = 5
	TypeFlushRequest MessageType = 6
	TypeStatus       MessageType = 7
	TypeDisconnect   MessageType = 8
)

func (t MessageType) String() string {
	switch t {
	case TypeCDCBatch:
		return "cdc_batch"
	case TypeAck:
		return "ack"
	case TypeNack:
		return "nack"
	case TypeConnect:
		return "connect"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeFlushRequest:
		return "flush_request"
	case TypeStatus:
		return "status"
	case TypeDisconnect:
		return "disconnect"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Flags is the flags byte of the binary header.
type Flags uint8

// Header flags.
const (
	FlagCompressed     Flags = 0x01
	FlagHasCorrelation Flags = 0x02
	FlagIsRetry        Flags = 0x04
	knownFlags               = FlagCompressed | FlagHasCorrelation | FlagIsRetry
)

// Op is the operation of a CDC entry, with its wire code. The codes are 0, 1,
// 2; the proto enum lakehouse.v1.Operation numbers the same operations 1, 2,
// 3 (0 is its "unspecified"): convert with the protomap package, never by
// adding one.
type Op uint8

// Operations and their wire codes.
const (
	OpInsert Op = 0
	OpUpdate Op = 1
	OpDelete Op = 2
)

// String returns the legacy name: INSERT, UPDATE or DELETE.
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "INSERT"
	case OpUpdate:
		return "UPDATE"
	case OpDelete:
		return "DELETE"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// ParseOp parses a legacy operation name.
func ParseOp(s string) (Op, error) {
	switch s {
	case "INSERT":
		return OpInsert, nil
	case "UPDATE":
		return OpUpdate, nil
	case "DELETE":
		return OpDelete, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownOperation, s)
}

// AckStatus is the status byte of an ack frame.
type AckStatus uint8

// Ack statuses and their wire codes.
const (
	AckOK        AckStatus = 0
	AckBuffered  AckStatus = 1
	AckPersisted AckStatus = 2
	AckDuplicate AckStatus = 3
	AckFallback  AckStatus = 4
)

var ackStatusNames = [...]string{"ok", "buffered", "persisted", "duplicate", "fallback"}

// String returns the legacy name, for example "ok".
func (s AckStatus) String() string {
	if int(s) < len(ackStatusNames) {
		return ackStatusNames[s]
	}
	return fmt.Sprintf("AckStatus(%d)", uint8(s))
}

// ParseAckStatus parses a legacy ack status name.
func ParseAckStatus(s string) (AckStatus, error) {
	for i, n := range ackStatusNames {
		if n == s {
			return AckStatus(i), nil
		}
	}
	return 0, fmt.Errorf("codec: unknown ack status %q", s)
}

// NackReason is the reason byte of a nack frame.
type NackReason uint8

// Nack reasons and their wire codes.
const (
	NackBufferFull      NackReason = 0
	NackRateLimited     NackReason = 1
	NackInvalidSequence NackReason = 2
	NackInvalidFormat   NackReason = 3
	NackInternalError   NackReason = 4
	NackShuttingDown    NackReason = 5
)

var nackReasonNames = [...]string{"buffer_full", "rate_limited", "invalid_sequence", "invalid_format", "internal_error", "shutting_down"}

// String returns the legacy name, for example "buffer_full".
func (r NackReason) String() string {
	if int(r) < len(nackReasonNames) {
		return nackReasonNames[r]
	}
	return fmt.Sprintf("NackReason(%d)", uint8(r))
}

// ParseNackReason parses a legacy nack reason name.
func ParseNackReason(s string) (NackReason, error) {
	for i, n := range nackReasonNames {
		if n == s {
			return NackReason(i), nil
		}
	}
	return 0, fmt.Errorf("codec: unknown nack reason %q", s)
}

// Sentinel errors, matched with errors.Is. Decoders wrap them in a
// *DecodeError that says where the problem is.
var (
	ErrTruncated          = errors.New("codec: frame truncated")
	ErrTooLarge           = errors.New("codec: message exceeds 16 MiB")
	ErrBadMagic           = errors.New("codec: bad magic number")
	ErrUnsupportedVersion = errors.New("codec: unsupported protocol version")
	ErrUnknownType        = errors.New("codec: unknown or unexpected message type")
	ErrUnknownOperation   = errors.New("codec: unknown operation")
	ErrCountMismatch      = errors.New("codec: entry count mismatch")
	ErrTrailingBytes      = errors.New("codec: trailing bytes after message")
	ErrChecksum           = errors.New("codec: checksum mismatch")
	ErrCompressed         = errors.New("codec: compressed frames are not supported")
	ErrInvalidUTF8        = errors.New("codec: invalid UTF-8")
	ErrInvalidJSON        = errors.New("codec: invalid JSON")
	ErrFieldTooLong       = errors.New("codec: field too long for its length prefix")
	ErrInvalidMessage     = errors.New("codec: invalid message")
)

// DecodeError reports what was wrong with a message and where.
type DecodeError struct {
	Offset int    // byte offset in the frame of the offending field
	Field  string // name of the field, for example "entries[3].table"
	Err    error  // one of the sentinel errors
	Detail string // extra explanation, may be empty
}

func (e *DecodeError) Error() string {
	// The field first: "entries[3].after" tells the sender what to fix;
	// the byte offset only helps whoever looks at the raw frame.
	msg := fmt.Sprintf("%v: %s (byte %d)", e.Err, e.Field, e.Offset)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// Unwrap returns the sentinel error.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(off int, field string, err error, detail string) error {
	return &DecodeError{Offset: off, Field: field, Err: err, Detail: detail}
}
