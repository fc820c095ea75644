package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// JSON message types (the "type" field).
const (
	JSONConnect      = "connect"
	JSONHeartbeat    = "heartbeat"
	JSONFlushRequest = "flush_request"
	JSONCDCBatch     = "cdc_batch"
	JSONStatus       = "status"
	JSONPong         = "pong"
)

// Capabilities are a client's capabilities (legacy ClientCapabilities).
type Capabilities struct {
	BinaryProtocol bool `json:"binaryProtocol"`
	Compression    bool `json:"compression"`
	Batching       bool `json:"batching"`
	MaxBatchSize   int  `json:"maxBatchSize"`
	MaxMessageSize int  `json:"maxMessageSize"`
}

// Capability flags, where capabilities are stored compactly.
const (
	CapBinaryProtocol = 0x01
	CapCompression    = 0x02
	CapBatching       = 0x04
)

// ConnectMessage is the JSON connect a child sends when its socket opens.
type ConnectMessage struct {
	Type            string       `json:"type"`
	Timestamp       int64        `json:"timestamp"`
	SourceDoID      string       `json:"sourceDoId"`
	SourceShardName string       `json:"sourceShardName,omitempty"`
	LastAckSequence uint64       `json:"lastAckSequence"`
	ProtocolVersion int          `json:"protocolVersion"`
	Capabilities    Capabilities `json:"capabilities"`
	CorrelationID   string       `json:"correlationId,omitempty"`
}

// HeartbeatMessage is the JSON heartbeat of a child.
type HeartbeatMessage struct {
	Type            string `json:"type"`
	Timestamp       int64  `json:"timestamp"`
	SourceDoID      string `json:"sourceDoId"`
	LastAckSequence uint64 `json:"lastAckSequence"`
	PendingEntries  int64  `json:"pendingEntries"`
}

// FlushRequestMessage asks the parent to flush.
type FlushRequestMessage struct {
	Type       string `json:"type"`
	Timestamp  int64  `json:"timestamp"`
	SourceDoID string `json:"sourceDoId"`
	Reason     string `json:"reason"` // manual | shutdown | buffer_full | time_threshold
}

// JSONEntry is an entry of a JSON cdc_batch. Before and After hold the JSON
// text exactly as sent; they are empty when absent or null.
type JSONEntry struct {
	Sequence  uint64          `json:"sequence"`
	Timestamp uint64          `json:"timestamp"`
	Operation string          `json:"operation"`
	Table     string          `json:"table"`
	RowID     string          `json:"rowId"`
	Before    json.RawMessage `json:"before,omitempty"`
	After     json.RawMessage `json:"after,omitempty"`
}

// CDCBatchMessage is a cdc_batch sent as JSON text (legacy CDCBatchMessage),
// also the shape of the legacy decoder's view of a binary batch.
type CDCBatchMessage struct {
	Type               string      `json:"type"`
	Timestamp          uint64      `json:"timestamp"`
	CorrelationID      string      `json:"correlationId,omitempty"`
	SourceDoID         string      `json:"sourceDoId"`
	SourceShardName    string      `json:"sourceShardName,omitempty"`
	Entries            []JSONEntry `json:"entries"`
	SequenceNumber     uint64      `json:"sequenceNumber"`
	FirstEntrySequence uint64      `json:"firstEntrySequence"`
	LastEntrySequence  uint64      `json:"lastEntrySequence"`
	SizeBytes          uint64      `json:"sizeBytes"`
	IsRetry            bool        `json:"isRetry"`
	RetryCount         int         `json:"retryCount"`
}

// BufferStatus is the buffer part of a StatusMessage.
type BufferStatus struct {
	BatchCount      int     `json:"batchCount"`
	EntryCount      int     `json:"entryCount"`
	TotalSizeBytes  int64   `json:"totalSizeBytes"`
	Utilization     float64 `json:"utilization"`
	OldestBatchTime int64   `json:"oldestBatchTime,omitempty"`
	NewestBatchTime int64   `json:"newestBatchTime,omitempty"`
}

// StatusMessage is the parent's JSON reply to connect.
type StatusMessage struct {
	Type              string       `json:"type"`
	Timestamp         int64        `json:"timestamp"`
	State             string       `json:"state"` // idle | receiving | flushing | recovering | error
	Buffer            BufferStatus `json:"buffer"`
	ConnectedChildren int          `json:"connectedChildren"`
	LastFlushTime     int64        `json:"lastFlushTime,omitempty"`
	NextFlushTime     int64        `json:"nextFlushTime,omitempty"`
}

// PongMessage is the parent's JSON reply to heartbeat.
type PongMessage struct {
	Type       string `json:"type"`
	Timestamp  int64  `json:"timestamp"`
	ServerTime int64  `json:"serverTime"`
}

// ParseJSONMessage parses a JSON text message from a child and returns one of
// *ConnectMessage, *HeartbeatMessage, *FlushRequestMessage or
// *CDCBatchMessage. Anything else (not an object, no string type, an unknown
// type, invalid UTF-8, over MaxMessageSize) is an error wrapping
// ErrInvalidJSON, ErrInvalidMessage or ErrUnknownType.
func ParseJSONMessage(data []byte) (any, error) {
	if len(data) > MaxMessageSize {
		return nil, decodeErr(0, "message", ErrTooLarge, fmt.Sprintf("%d bytes", len(data)))
	}
	if !utf8.Valid(data) {
		return nil, decodeErr(0, "message", ErrInvalidUTF8, "")
	}
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, jsonErr(err)
	}
	if head.Type == nil {
		return nil, decodeErr(0, "type", ErrInvalidMessage, "JSON message without a string type")
	}
	var msg any
	switch *head.Type {
	case JSONConnect:
		msg = new(ConnectMessage)
	case JSONHeartbeat:
		msg = new(HeartbeatMessage)
	case JSONFlushRequest:
		msg = new(FlushRequestMessage)
	case JSONCDCBatch:
		msg = new(CDCBatchMessage)
	default:
		return nil, decodeErr(0, "type", ErrUnknownType, fmt.Sprintf("JSON type %q", *head.Type))
	}
	if err := json.Unmarshal(data, msg); err != nil {
		return nil, jsonErr(err)
	}
	return msg, nil
}

func jsonErr(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return decodeErr(int(se.Offset), "message", ErrInvalidJSON, se.Error())
	case errors.As(err, &te):
		return decodeErr(int(te.Offset), te.Field, ErrInvalidMessage, te.Error())
	}
	return decodeErr(0, "message", ErrInvalidJSON, err.Error())
}

// isAbsentJSON reports whether raw JSON stands for "absent": empty or null.
func isAbsentJSON(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// ToBatch converts a JSON cdc_batch to a Batch. Its slices reference m's
// strings' copies; before/after that are null become absent.
func (m *CDCBatchMessage) ToBatch() (*Batch, error) {
	b := &Batch{
		Timestamp: m.Timestamp,
		Sequence:  m.SequenceNumber,
		Retry:     m.IsRetry,
		SourceID:  []byte(m.SourceDoID),
		Entries:   make([]Entry, len(m.Entries)),
	}
	if m.CorrelationID != "" {
		b.CorrelationID = []byte(m.CorrelationID)
	}
	for i := range m.Entries {
		je := &m.Entries[i]
		op, err := ParseOp(je.Operation)
		if err != nil {
			return nil, decodeErr(0, entryField(i, "operation"), ErrUnknownOperation, fmt.Sprintf("%q", je.Operation))
		}
		e := &b.Entries[i]
		e.Sequence, e.Timestamp, e.Op = je.Sequence, je.Timestamp, op
		e.Table, e.RowID = []byte(je.Table), []byte(je.RowID)
		if !isAbsentJSON(je.Before) {
			e.Before = je.Before
		}
		if !isAbsentJSON(je.After) {
			e.After = je.After
		}
	}
	b.PayloadSize = uint32(b.EncodedSize() - batchFixedSize - len(b.SourceID) - len(b.CorrelationID))
	return b, nil
}

// BatchMessage returns the legacy decoder's view of b: what a legacy
// decodeMessage returns for b's frame (sizeBytes is P, retryCount 0).
func BatchMessage(b *Batch) *CDCBatchMessage {
	m := &CDCBatchMessage{
		Type:               JSONCDCBatch,
		Timestamp:          b.Timestamp,
		CorrelationID:      string(b.CorrelationID),
		SourceDoID:         string(b.SourceID),
		Entries:            make([]JSONEntry, len(b.Entries)),
		SequenceNumber:     b.Sequence,
		FirstEntrySequence: b.FirstEntrySequence(),
		LastEntrySequence:  b.LastEntrySequence(),
		SizeBytes:          uint64(b.PayloadSize),
		IsRetry:            b.Retry,
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		m.Entries[i] = JSONEntry{
			Sequence:  e.Sequence,
			Timestamp: e.Timestamp,
			Operation: e.Op.String(),
			Table:     string(e.Table),
			RowID:     string(e.RowID),
			Before:    json.RawMessage(e.Before),
			After:     json.RawMessage(e.After),
		}
	}
	return m
}
