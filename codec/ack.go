package codec

import (
	"fmt"
	"unicode/utf8"
)

const (
	ackFixedSize  = HeaderSize + 1 // header + status
	nackFixedSize = HeaderSize + 8 // header + reason, shouldRetry, retryDelayMs, message length
)

// Ack is an ack frame: the batch Sequence was accepted with Status.
type Ack struct {
	Timestamp     uint64 // ms since the Unix epoch
	Sequence      uint64 // the acknowledged batch's sequence number
	Status        AckStatus
	CorrelationID []byte // the batch's correlation id; nil when absent
}

// AppendAck appends a's frame to dst: 25 bytes, plus 2 + len(CorrelationID)
// when a correlation id is present.
func AppendAck(dst []byte, a *Ack) ([]byte, error) {
	if len(a.CorrelationID) > 0xFFFF {
		return dst, fmt.Errorf("%w: correlationId is %d bytes", ErrFieldTooLong, len(a.CorrelationID))
	}
	size := ackFixedSize
	var flags Flags
	if len(a.CorrelationID) > 0 {
		flags = FlagHasCorrelation
		size += 2 + len(a.CorrelationID)
	}
	start := len(dst)
	dst = grow(dst, size)
	f := dst[start:]
	putHeader(f, TypeAck, flags, a.Timestamp, a.Sequence)
	f[24] = byte(a.Status)
	if flags != 0 {
		le.PutUint16(f[25:], uint16(len(a.CorrelationID)))
		copy(f[27:], a.CorrelationID)
	}
	return dst, nil
}

// DecodeAck decodes an ack frame. The correlation id references frame. An
// unknown status code is returned as is (legacy children read it as ok).
func DecodeAck(frame []byte) (*Ack, error) {
	h, err := ReadHeader(frame)
	if err != nil {
		return nil, err
	}
	if h.Type != TypeAck {
		return nil, decodeErr(3, "type", ErrUnknownType, fmt.Sprintf("%s, expected ack", h.Type))
	}
	if len(frame) < ackFixedSize {
		return nil, decodeErr(len(frame), "status", ErrTruncated, "")
	}
	a := &Ack{Timestamp: h.Timestamp, Sequence: h.Sequence, Status: AckStatus(frame[24])}
	off := ackFixedSize
	if h.Flags&FlagHasCorrelation != 0 {
		a.CorrelationID, off, err = readCorrelation(frame, off)
		if err != nil {
			return nil, err
		}
	}
	if off != len(frame) {
		return nil, decodeErr(off, "frame", ErrTrailingBytes, fmt.Sprintf("%d bytes after the ack", len(frame)-off))
	}
	return a, nil
}

// Nack is a nack frame: the batch Sequence was refused for Reason.
type Nack struct {
	Timestamp     uint64 // ms since the Unix epoch
	Sequence      uint64 // the refused batch's sequence number, 0 when unknown
	Reason        NackReason
	ShouldRetry   bool
	RetryDelayMs  uint32 // 0 means not given
	Message       string
	CorrelationID []byte // the batch's correlation id; nil when absent or unknown
}

// AppendNack appends n's frame to dst.
func AppendNack(dst []byte, n *Nack) ([]byte, error) {
	if len(n.Message) > 0xFFFF {
		return dst, fmt.Errorf("%w: error message is %d bytes", ErrFieldTooLong, len(n.Message))
	}
	if len(n.CorrelationID) > 0xFFFF {
		return dst, fmt.Errorf("%w: correlationId is %d bytes", ErrFieldTooLong, len(n.CorrelationID))
	}
	size := nackFixedSize + len(n.Message)
	var flags Flags
	if len(n.CorrelationID) > 0 {
		flags = FlagHasCorrelation
		size += 2 + len(n.CorrelationID)
	}
	start := len(dst)
	dst = grow(dst, size)
	f := dst[start:]
	putHeader(f, TypeNack, flags, n.Timestamp, n.Sequence)
	f[24] = byte(n.Reason)
	f[25] = 0
	if n.ShouldRetry {
		f[25] = 1
	}
	le.PutUint32(f[26:], n.RetryDelayMs)
	le.PutUint16(f[30:], uint16(len(n.Message)))
	off := nackFixedSize + copy(f[nackFixedSize:], n.Message)
	if flags != 0 {
		le.PutUint16(f[off:], uint16(len(n.CorrelationID)))
		copy(f[off+2:], n.CorrelationID)
	}
	return dst, nil
}

// DecodeNack decodes a nack frame. The correlation id references frame.
func DecodeNack(frame []byte) (*Nack, error) {
	h, err := ReadHeader(frame)
	if err != nil {
		return nil, err
	}
	if h.Type != TypeNack {
		return nil, decodeErr(3, "type", ErrUnknownType, fmt.Sprintf("%s, expected nack", h.Type))
	}
	if len(frame) < nackFixedSize {
		return nil, decodeErr(len(frame), "nack fields", ErrTruncated, "")
	}
	n := &Nack{
		Timestamp:    h.Timestamp,
		Sequence:     h.Sequence,
		Reason:       NackReason(frame[24]),
		ShouldRetry:  frame[25] != 0,
		RetryDelayMs: le.Uint32(frame[26:]),
	}
	ml := int(le.Uint16(frame[30:]))
	off := nackFixedSize
	if ml > len(frame)-off {
		return nil, decodeErr(30, "errorMessage", ErrTruncated, fmt.Sprintf("length %d, %d bytes left", ml, len(frame)-off))
	}
	if !utf8.Valid(frame[off : off+ml]) {
		return nil, decodeErr(off, "errorMessage", ErrInvalidUTF8, "")
	}
	n.Message = string(frame[off : off+ml])
	off += ml
	if h.Flags&FlagHasCorrelation != 0 {
		n.CorrelationID, off, err = readCorrelation(frame, off)
		if err != nil {
			return nil, err
		}
	}
	if off != len(frame) {
		return nil, decodeErr(off, "frame", ErrTrailingBytes, fmt.Sprintf("%d bytes after the nack", len(frame)-off))
	}
	return n, nil
}

func readCorrelation(frame []byte, off int) ([]byte, int, error) {
	if len(frame)-off < 2 {
		return nil, off, decodeErr(off, "correlationIdLength", ErrTruncated, "")
	}
	cl := int(le.Uint16(frame[off:]))
	off += 2
	if cl > len(frame)-off {
		return nil, off, decodeErr(off, "correlationId", ErrTruncated, fmt.Sprintf("length %d, %d bytes left", cl, len(frame)-off))
	}
	return frame[off : off+cl : off+cl], off + cl, nil
}
