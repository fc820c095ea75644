package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Entry is one CDC entry: the codec's entry. Its byte slices are kept (not
// copied) until the batch holding it is acknowledged, so the caller must not
// modify them after Send.
type Entry = codec.Entry

// Errors returned by the client (match with errors.Is).
var (
	// ErrClosed: the client is closed or closing.
	ErrClosed = errors.New("client: closed")
	// ErrFailed: the client failed for good (reconnect attempts exhausted,
	// fenced by a newer stream, or a permanent server error).
	ErrFailed = errors.New("client: failed")
	// ErrFenced: a newer stream for the same source took over.
	ErrFenced = errors.New("client: fenced by a newer stream for the same source")
	// ErrGaveUp: the client gave up on a batch (see BatchError).
	ErrGaveUp = errors.New("client: gave up on batch")
	// ErrAckTimeout: no ack within the ack timeout.
	ErrAckTimeout = errors.New("client: ack timeout")
	// ErrShuttingDown: the server is draining.
	ErrShuttingDown = errors.New("client: server shutting down")
	// ErrDeliveryTimeout: a batch was not acknowledged within the delivery
	// timeout (WithDeliveryTimeout).
	ErrDeliveryTimeout = errors.New("client: delivery timeout")
	// ErrAckedLost: the server no longer has batches it acknowledged with
	// OK and the client no longer holds (see LostError).
	ErrAckedLost = errors.New("client: the server lost acknowledged batches")
	// ErrInvalidOption: an option's value is out of range (Dial and New).
	ErrInvalidOption = errors.New("client: invalid option")
)

// BatchError reports a batch the client gave up on, with its entries, so the
// caller can store or resend them. It matches ErrGaveUp.
type BatchError struct {
	// Seq is the batch number it last had (0 if it was never sent).
	Seq uint64
	// Entries are the batch's entries.
	Entries []Entry
	// Reason is the last nack reason (NACK_REASON_UNSPECIFIED when the batch
	// was not refused by the server but, e.g., timed out or was abandoned by
	// Close).
	Reason lakehousev1.NackReason
	// Attempts is the number of transmissions.
	Attempts int
	// Err is the cause.
	Err error
}

// Error describes the failure.
func (e *BatchError) Error() string {
	return fmt.Sprintf("client: gave up on batch %d (%d entries, %d attempts, %s): %v",
		e.Seq, len(e.Entries), e.Attempts, e.Reason, e.Err)
}

// Unwrap returns the cause.
func (e *BatchError) Unwrap() error { return e.Err }

// Is reports whether target is ErrGaveUp.
func (e *BatchError) Is(target error) bool { return target == ErrGaveUp }

// LostError reports batches the server acknowledged (OK: durable in that
// instance's log) but no longer has, found when the client reconnects. It
// happens when the instance that acked them is lost for good, or when the
// source moved to another instance while that one was down (docs/scale-out.md:
// its batches are then dropped, never committed twice). The client cannot
// resend them: in the default mode it releases a batch once acked. Clients
// that must survive the loss of an instance hold batches until persisted
// (WithWaitForPersisted), which never loses them. It matches ErrAckedLost.
type LostError struct {
	// FromSeq and ToSeq are the lost batch numbers (inclusive).
	FromSeq, ToSeq uint64
}

// Error describes the loss.
func (e *LostError) Error() string {
	return fmt.Sprintf("client: the server lost acknowledged batches %d-%d (%d batches): they were acked, released, and cannot be resent",
		e.FromSeq, e.ToSeq, e.ToSeq-e.FromSeq+1)
}

// Is reports whether target is ErrAckedLost.
func (e *LostError) Is(target error) bool { return target == ErrAckedLost }

// NackError is the cause in a BatchError for a batch the server refused.
type NackError struct {
	// Nack is the refusal.
	Nack Nack
}

// Error describes the nack.
func (e *NackError) Error() string {
	return fmt.Sprintf("nack %s for batch %d: %s", e.Nack.Reason, e.Nack.Sequence, e.Nack.Message)
}

// ConnState is the state of a client's connection.
type ConnState int

// Connection states.
const (
	// StateConnecting: opening the first stream.
	StateConnecting ConnState = iota
	// StateConnected: the stream is up and Connected was received.
	StateConnected
	// StateReconnecting: the stream broke; waiting to reconnect.
	StateReconnecting
	// StateClosed: Close finished.
	StateClosed
	// StateFailed: the client failed for good; Close it.
	StateFailed
)

// String returns the state's name.
func (s ConnState) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// MarshalText encodes the state as its name.
func (s ConnState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// StateChange is passed to the OnStateChange callback.
type StateChange struct {
	// From and To are the old and new states.
	From, To ConnState
	// Err is why the stream broke or the client failed (nil otherwise).
	Err error
}

// Ack reports an acknowledged batch.
type Ack struct {
	// Sequence is the batch number.
	Sequence uint64
	// Status is the server's status (DUPLICATE also when the client learnt on
	// reconnect that the server already had the batch).
	Status lakehousev1.AckStatus
	// Entries is the number of entries in the batch.
	Entries int
	// Bytes is the size of the batch's last transmission.
	Bytes int
	// Attempts is the number of transmissions.
	Attempts int
	// Latency is the time from the last transmission to the ack.
	Latency time.Duration
	// Details are the server's ack details (nil when absent or synthesised).
	Details *lakehousev1.AckDetails
}

// Nack reports a refused batch.
type Nack struct {
	// Sequence is the batch number.
	Sequence uint64
	// Reason is why.
	Reason lakehousev1.NackReason
	// Message is the server's explanation.
	Message string
	// RetryDelay is the server's requested delay before a resend.
	RetryDelay time.Duration
	// ExpectedSequence is the batch number the server expects
	// (INVALID_SEQUENCE only).
	ExpectedSequence uint64
	// Stale is true for a nack of an earlier transmission that the client has
	// already handled (e.g. INVALID_SEQUENCE for batches pipelined behind a
	// BUFFER_FULL); it is ignored.
	Stale bool
}

// Persisted reports a Persisted watermark.
type Persisted struct {
	// Sequence: the source's batches up to this number are in Iceberg.
	Sequence uint64
	// EntrySequence: the source's entries up to this sequence are in Iceberg.
	EntrySequence uint64
	// Latency is the time from the first transmission of the newest batch the
	// watermark covers to its arrival (0 when unknown).
	Latency time.Duration
}
