package client

import (
	"fmt"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// handle processes one message from the server (run by the session's reader).
func (c *Client) handle(resp *lakehousev1.StreamResponse) {
	now := c.clock.Now()
	c.mu.Lock()
	switch k := resp.GetKind().(type) {
	case *lakehousev1.StreamResponse_Ack:
		c.onAckLocked(k.Ack, now)
	case *lakehousev1.StreamResponse_Nack:
		c.onNackLocked(k.Nack, now)
	case *lakehousev1.StreamResponse_Persisted:
		c.persistedLocked(k.Persisted.GetSequenceNumber(), k.Persisted.GetEntrySequence(), now, true)
	case *lakehousev1.StreamResponse_Pong:
		c.st.pongs++
	case *lakehousev1.StreamResponse_Connected:
		c.log.Warn("client: unexpected connected mid-stream")
	}
	c.mu.Unlock()
	c.flushEvents()
}

// ---- acks ----

func (c *Client) onAckLocked(a *lakehousev1.Ack, now time.Time) {
	b, _ := c.q.lookup(a.GetSequenceNumber(), a.GetCorrelationId())
	if d := a.GetDetails(); d != nil && d.GetPersistedSequence() > c.q.persisted {
		defer c.persistedLocked(d.GetPersistedSequence(), 0, now, false)
	}
	if b == nil {
		c.st.staleAcks++
		return
	}
	if b.state == stAcked {
		if a.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_PERSISTED {
			c.q.persistAcked(b)
			c.broadcastLocked()
		}
		return
	}
	c.breaker.Success()
	c.seqBounces = 0
	c.pressure = 0
	// BUFFERED asks to slow down: keep one batch in flight until the server
	// acks OK again (this avoids BUFFER_FULL and its long retry delay).
	c.slow = a.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_BUFFERED
	c.acceptLocked(b, a.GetStatus(), a.GetDetails(), now, true)
	c.wakeWriter()
}

// acceptLocked records b as acknowledged with status st (real: a server's
// ack of a transmission, rather than one synthesised from a resync or a
// watermark).
func (c *Client) acceptLocked(b *batch, st lakehousev1.AckStatus, d *lakehousev1.AckDetails, now time.Time, real bool) {
	ack := Ack{
		Sequence: b.seq,
		Status:   st,
		Entries:  len(b.entries),
		Bytes:    b.lastSize,
		Attempts: b.attempts,
		Details:  d,
	}
	if real {
		ack.Latency = now.Sub(b.lastSent)
		c.st.ackHist.Record(ack.Latency)
	}
	c.q.ack(b, ack)
	c.st.acked(b, st)
	if f := c.cfg.onAck; f != nil {
		c.emit(func() { f(ack) })
	}
	c.broadcastLocked()
}

// persistedLocked handles a Persisted watermark (event: a Persisted message,
// reported to OnPersisted).
func (c *Client) persistedLocked(seq, entrySeq uint64, now time.Time, event bool) {
	lat := c.st.persisted(seq, now)
	for _, b := range c.q.persist(seq) {
		c.acceptLocked(b, lakehousev1.AckStatus_ACK_STATUS_PERSISTED, nil, now, false)
	}
	if event {
		if f := c.cfg.onPersisted; f != nil {
			p := Persisted{Sequence: seq, EntrySequence: entrySeq, Latency: lat}
			c.emit(func() { f(p) })
		}
	}
	c.broadcastLocked()
}

// ---- nacks ----

func (c *Client) onNackLocked(n *lakehousev1.Nack, now time.Time) {
	nk := Nack{
		Sequence:         n.GetSequenceNumber(),
		Reason:           n.GetReason(),
		Message:          n.GetErrorMessage(),
		RetryDelay:       time.Duration(n.GetRetryDelayMs()) * time.Millisecond,
		ExpectedSequence: n.GetExpectedSequence(),
	}
	b, current := c.q.lookup(n.GetSequenceNumber(), n.GetCorrelationId())
	if b == nil || !current || b.state != stSent {
		nk.Stale = true
		c.st.staleNacks++
	} else {
		c.st.nacks[n.GetReason()]++
	}
	if f := c.cfg.onNack; f != nil {
		c.emit(func() { f(nk) })
	}
	if nk.Stale {
		return
	}
	b.lastReason = nk.Reason
	c.log.Debug("client: nack", "seq", b.seq, "reason", nk.Reason, "message", nk.Message)
	switch nk.Reason {
	case lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, lakehousev1.NackReason_NACK_REASON_RATE_LIMITED:
		c.backpressureLocked(b, nk, now)
	case lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT:
		c.giveUpLocked(b, nk.Reason, &NackError{Nack: nk}, true)
	case lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN:
		c.q.rewind(b)
		c.sessionErr = fmt.Errorf("%w: %s", ErrShuttingDown, nk.Message)
	case lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE:
		c.invalidSequenceLocked(b, nk, now)
	default: // INTERNAL_ERROR and unknown reasons: retry with backoff
		c.failureLocked(b, nk, now)
	}
	c.broadcastLocked()
	c.wakeWriter()
}

// backpressureLocked handles BUFFER_FULL and RATE_LIMITED: they do not count
// against b's retries, but pause sending for the server's retry delay, or
// for a backoff growing with the backpressure nacks since the last ack if
// that is longer, and then resume one batch at a time until an OK ack.
func (c *Client) backpressureLocked(b *batch, nk Nack, now time.Time) {
	c.pressure++
	d := max(nk.RetryDelay, c.backoff(c.pressure, c.cfg.retryDelay))
	c.q.rewind(b)
	c.resumeAt = maxTime(c.resumeAt, now.Add(d))
	c.slow = true
}

// invalidSequenceLocked handles INVALID_SEQUENCE for b (in flight, current
// transmission): the server expects batch E = nk.ExpectedSequence.
func (c *Client) invalidSequenceLocked(b *batch, nk Nack, now time.Time) {
	exp := nk.ExpectedSequence
	switch {
	case exp == 0 || exp == b.seq:
		// Contradictory: count it against b and resend after a backoff.
		c.failureLocked(b, nk, now)
		return
	case exp > b.seq:
		// The server already has b (and what follows up to exp-1).
		c.resyncLocked(exp-1, now)
		return
	}
	// exp < b.seq: the server lacks exp..b.seq-1.
	for _, p := range c.q.all() {
		if p.seq == exp && p.state != stAcked {
			// Batch exp is still on its way (or queued for a resend): b was
			// refused only because it came first. Resend b after exp; if exp
			// is in flight, back off so that b does not bounce until exp's
			// fate is known.
			c.q.rewind(b)
			if p.state == stSent {
				c.seqBounces++
				c.resumeAt = maxTime(c.resumeAt, now.Add(c.backoff(c.seqBounces, c.cfg.retryDelay)))
			}
			return
		}
	}
	// The client no longer holds batch exp: the server lost batches it had
	// acknowledged. Renumber from exp (bounded by b's retry count).
	b.failures++
	if b.failures > c.cfg.maxRetries+1 {
		c.giveUpLocked(b, nk.Reason, &NackError{Nack: nk}, true)
		return
	}
	c.resyncLocked(exp-1, now)
}

// failureLocked counts a failed transmission of b: resend after a backoff,
// or give up after the retry limit.
func (c *Client) failureLocked(b *batch, nk Nack, now time.Time) {
	c.breaker.Failure()
	b.failures++
	if b.failures > c.cfg.maxRetries {
		c.giveUpLocked(b, nk.Reason, &NackError{Nack: nk}, true)
		return
	}
	c.q.rewind(b)
	c.resumeAt = maxTime(c.resumeAt, now.Add(c.backoff(b.failures, c.cfg.retryDelay)))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// ---- giving up ----

// giveUpLocked releases b as failed and reports it as a *BatchError. With
// renumber, the unaccepted batches after b lose their numbers (the server
// still expects b's number).
func (c *Client) giveUpLocked(b *batch, reason lakehousev1.NackReason, cause error, renumber bool) {
	err := &BatchError{Seq: b.seq, Entries: b.entries, Reason: reason, Attempts: b.attempts, Err: cause}
	if !c.q.fail(b, err, renumber) {
		return
	}
	c.st.batchesFailed++
	c.st.entriesFailed += uint64(len(b.entries))
	c.errs = append(c.errs, err)
	c.log.Warn("client: gave up on batch", "seq", err.Seq, "entries", len(b.entries), "reason", reason, "err", cause)
	if f := c.cfg.onError; f != nil {
		c.emit(func() { f(err) })
	}
	c.broadcastLocked()
	c.wakeWriter()
}

// giveUpAllLocked gives up on every pending batch (Close, failure), with the
// batch's last nack reason when lastReason is set.
func (c *Client) giveUpAllLocked(cause error, lastReason bool) {
	for c.q.len() > 0 {
		b := c.q.all()[0]
		reason := lakehousev1.NackReason_NACK_REASON_UNSPECIFIED
		if lastReason {
			reason = b.lastReason
		}
		c.giveUpLocked(b, reason, cause, false)
	}
}

// expireLocked gives up on the queued batches sealed longer than the
// delivery timeout ago, and returns when the next queued batch expires (zero:
// none, or no delivery timeout). It is called only while a stream is up,
// after Connected, when a queued batch is known not to be the server's.
func (c *Client) expireLocked(now time.Time) time.Time {
	d := c.cfg.deliveryTimeout
	if d <= 0 {
		return time.Time{}
	}
	for _, b := range c.q.expired(now.Add(-d)) {
		c.giveUpLocked(b, b.lastReason, fmt.Errorf("%w: not acknowledged %s after it was sealed, %d attempts", ErrDeliveryTimeout, d, b.attempts), true)
	}
	if b := c.q.nextQueued(); b != nil {
		return b.sealed.Add(d)
	}
	return time.Time{}
}
