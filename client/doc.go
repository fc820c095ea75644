// Package client is the Go client of the lakehouse CDC service: it streams
// change-data-capture entries of one source to the server over the
// CDCService.Stream gRPC stream.
//
// A Client batches entries (1,000 entries, 4 MiB or 1 s by default, the
// original DEFAULT_CHILD_CONFIG), numbers batches 1, 2, 3... per source,
// keeps every batch until the server acknowledges it (or, in wait-for-persisted
// mode, until it is committed to Iceberg), resends a batch under the same
// number after a nack, an ack timeout or a reconnect, and resumes after a
// reconnect from the server's Connected.last_sequence so that the server holds
// every batch exactly once. Pending batches are bounded (100 by default): Send
// blocks when the bound is reached. A circuit breaker (closed, open,
// half-open) stops the client from hammering a failing server.
//
// Nothing is dropped silently: a batch the client gives up on (retries
// exhausted, INVALID_FORMAT, delivery timeout, reconnect attempts exhausted,
// Close before its ack) is reported as a *BatchError carrying its entries,
// through the OnError callback and from Flush or Close.
//
// Options are checked: a value out of range makes Dial and New fail with an
// error matching ErrInvalidOption that names the option.
//
// # Sequencing, resend and resume
//
// One queue owns the sealed batches: their states (queued, sent, acked,
// persisted, failed) and their numbering.
//
// A batch gets its number when it is first put on the stream (the first
// number of a client is Connected.last_sequence+1) and keeps it for every
// resend. Batches are pipelined in order; every transmission carries a
// correlation id "<batch id>.<transmission>" that the server echoes, so an
// answer is matched to the batch and transmission it is about, whatever the
// batch's number has become.
//
// The server accepts batches strictly in order, so a refusal is handled
// go-back-N: after a nack of batch N, N and every later batch in flight are
// queued again and resent in order. The nacks the server sends for the later
// batches (INVALID_SEQUENCE, naming N) are recognised as answers to
// superseded transmissions and ignored. BUFFER_FULL and RATE_LIMITED pause
// sending for the nack's retry_delay_ms, or for a backoff growing with the
// backpressure nacks since the last ack if that is longer (they do not count
// as failures; WithDeliveryTimeout bounds how long a batch may wait);
// INTERNAL_ERROR and ack timeouts count against the batch's retries (3 by
// default, backoff 100 ms x2 up to 10 s) and against the circuit breaker;
// INVALID_FORMAT gives up at once; SHUTTING_DOWN reconnects. When the client
// gives up on batch N, the later batches it holds are renumbered from N,
// since the server still expects N. An ack with status BUFFERED (the server's
// buffer above 80%) makes the client keep a single batch in flight until
// acks say OK again.
//
// On every (re)connect the client reads Connected.last_sequence L: pending
// batches numbered <= L are already accepted (reported as DUPLICATE acks and
// dropped, or kept until persisted), everything else is resent from L+1. If
// the server lacks batches the client no longer holds (a server that lost
// acknowledged data), the pending batches are renumbered from L+1 rather
// than leaving a gap the server would refuse forever. A newer stream for the
// same source fences this one (gRPC Aborted): the client then fails with
// ErrFenced instead of fighting its successor.
//
// Against several server instances (docs/scale-out.md), a connect to an
// instance that does not own the source is answered with a Redirect to the
// owner's address. A client made with Dial follows it at once (at most
// WithMaxRedirects in a row, default 3), and goes back to the address given
// to Dial when the owner does not answer; a client made with New over the
// caller's connection cannot reach another address and retries through its
// connection, as after Unavailable.
//
// # Circuit breaker
//
// The breaker opens after 5 consecutive failures (failed connects, broken
// streams, INTERNAL_ERROR nacks, ack timeouts) for 1 s x 2^(failures beyond
// 5), at most 30 s. While it is open, Send, SendMany and SendBatch fail fast
// with an error matching ErrCircuitOpen (nothing is accepted), and the client
// sends nothing; then it lets one probe through (half-open: one connect or
// one batch), whose outcome closes or reopens it. Any ack is a success.
//
// # Callbacks
//
// OnAck, OnNack, OnPersisted, OnError, OnStateChange and the breaker's
// OnStateChange run on the client's goroutines, never with its lock held; they
// may call the client's methods. A panic in a callback is recovered and
// logged. Slow callbacks slow the client down.
package client
