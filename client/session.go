package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

type cdcStream = grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]

// errStopped ends a session on Close.
var errStopped = errors.New("client: stopped")

// permanent reports whether a stream error will not go away by reconnecting.
func permanent(err error) bool {
	if errors.Is(err, ErrFenced) {
		return true
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.InvalidArgument:
		return true
	}
	return false
}

func (c *Client) backoff(n int, base time.Duration) time.Duration {
	d := float64(base)
	for i := 1; i < n; i++ {
		d *= c.cfg.retryMultiplier
		if d >= float64(c.cfg.maxRetryDelay) {
			return c.cfg.maxRetryDelay
		}
	}
	return min(time.Duration(d), c.cfg.maxRetryDelay)
}

// sleep waits d on the client's clock; false when the client stops.
func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-c.ctx.Done():
		return false
	}
}

// run is the connection manager: it opens streams and reconnects.
func (c *Client) run() {
	defer c.wg.Done()
	defer close(c.runDone)
	failures := 0
	for {
		if !c.waitBreaker() {
			return
		}
		connected, err := c.session()
		c.mu.Lock()
		stopping := c.stopping || c.failErr != nil
		c.mu.Unlock()
		if stopping || c.ctx.Err() != nil {
			return
		}
		if connected {
			failures = 0
		}
		failures++
		c.log.Warn("client: stream ended", "err", err, "attempt", failures)
		if permanent(err) || !c.cfg.autoReconnect || failures > c.cfg.maxReconnectAttempts {
			c.fail(err)
			return
		}
		c.mu.Lock()
		c.setStateLocked(StateReconnecting, err)
		c.mu.Unlock()
		c.flushEvents()
		if !c.sleep(c.backoff(failures, c.cfg.reconnectDelay)) {
			return
		}
	}
}

// waitBreaker waits until the breaker lets a connection attempt through.
func (c *Client) waitBreaker() bool {
	for {
		if c.ctx.Err() != nil {
			return false
		}
		ok, retry, _, cb := c.breaker.acquire(false)
		run(cb)
		c.flushEvents()
		if ok {
			return true
		}
		if retry <= 0 {
			retry = c.cfg.retryDelay
		}
		if !c.sleep(retry) {
			return false
		}
	}
}

// session runs one stream until it fails or the client stops. connected says
// whether Connected was received.
func (c *Client) session() (connected bool, err error) {
	sctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	stream, err := c.rpc.Stream(sctx)
	if err != nil {
		c.breaker.Failure()
		return false, fmt.Errorf("client: open stream: %w", err)
	}
	c.mu.Lock()
	lastAcked := c.lastAcked
	c.mu.Unlock()
	connect := &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId:        c.sourceID,
		ShardName:       c.cfg.shardName,
		LastAckSequence: lastAcked,
		ProtocolVersion: 1,
		SequenceMode:    lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH,
		Capabilities: &lakehousev1.Capabilities{
			BinaryProtocol: c.cfg.mode == ModeBinary,
			Batching:       true,
			MaxBatchSize:   uint32(c.cfg.maxBatchEntries),
			MaxMessageSize: uint32(min(c.cfg.maxBatchBytes, math.MaxUint32)),
		},
	}}}
	if err := stream.Send(connect); err != nil {
		_, rerr := stream.Recv()
		c.breaker.Failure()
		return false, fmt.Errorf("client: send connect: %w", streamErr(rerr, err))
	}
	// Bound the wait for Connected by the ack timeout.
	got := make(chan struct{})
	t := c.clock.NewTimer(c.cfg.ackTimeout)
	go func() {
		select {
		case <-t.C():
			cancel()
		case <-got:
		}
	}()
	resp, err := stream.Recv()
	close(got)
	t.Stop()
	if err != nil {
		c.breaker.Failure()
		return false, fmt.Errorf("client: waiting for connected: %w", streamErr(err, nil))
	}
	conn := resp.GetConnected()
	if conn == nil {
		c.breaker.Failure()
		return false, fmt.Errorf("client: expected connected, got %T", resp.GetKind())
	}
	c.breaker.Success()
	c.onConnected(conn)

	readerDone := make(chan struct{})
	var readerErr error
	go func() {
		defer close(readerDone)
		for {
			resp, err := stream.Recv()
			if err != nil {
				readerErr = err
				return
			}
			c.handle(resp)
		}
	}()
	err = c.writeLoop(stream, readerDone, &readerErr)
	cancel()
	<-readerDone
	c.endSession()
	if errors.Is(err, errStopped) {
		return true, err
	}
	c.breaker.Failure()
	return true, err
}

// streamErr turns a stream error into the client's: io.EOF means the server
// ended the stream; Aborted means fenced.
func streamErr(err, fallback error) error {
	if err == nil {
		err = fallback
	}
	if err == nil || errors.Is(err, io.EOF) {
		return errors.New("client: stream closed by the server")
	}
	if status.Code(err) == codes.Aborted {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

func (c *Client) onConnected(conn *lakehousev1.Connected) {
	now := c.clock.Now()
	c.mu.Lock()
	if c.st.batchesSent > 0 || c.state == StateReconnecting {
		c.st.reconnects++
	}
	c.log.Info("client: connected", "last_sequence", conn.GetLastSequence(), "persisted_sequence", conn.GetPersistedSequence())
	if conn.GetPersistedSequence() > c.persistedSeq {
		c.persistedLocked(conn.GetPersistedSequence(), 0, now, false)
	}
	c.resyncLocked(conn.GetLastSequence(), now)
	// Give up, now that the server's position is known, on batches that
	// timed out too often (the server does not have them: resyncLocked
	// accepted those it has).
	for i := 0; i < len(c.pending); {
		b := c.pending[i]
		if b.state == stQueued && b.failures > c.cfg.maxRetries {
			c.giveUpLocked(b, b.lastReason, fmt.Errorf("%w after %d failures", ErrAckTimeout, b.failures), true)
			continue
		}
		i++
	}
	c.setStateLocked(StateConnected, nil)
	c.mu.Unlock()
	c.flushEvents()
	c.wakeWriter()
}

// resyncLocked aligns the pending batches with the server's last accepted
// batch number: batches at or below it are accepted (duplicates), every other
// is queued for sending; when the server lacks batches the client no longer
// holds (it lost acknowledged data), the queued batches are renumbered.
func (c *Client) resyncLocked(last uint64, now time.Time) {
	for i := 0; i < len(c.pending); {
		b := c.pending[i]
		if b.seq != 0 && b.seq <= last && b.state != stAcked {
			if c.acceptLocked(b, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, nil, now, false) {
				continue // removed
			}
		}
		i++
	}
	var lowest uint64
	for _, b := range c.pending {
		if b.seq != 0 && b.seq <= last {
			continue
		}
		if b.state == stAcked {
			c.log.Warn("client: server lost an acknowledged batch; resending", "seq", b.seq, "server_last", last)
		}
		b.state = stQueued
		if b.seq != 0 && (lowest == 0 || b.seq < lowest) {
			lowest = b.seq
		}
	}
	switch {
	case lowest == 0:
		if c.nextSeq > last+1 {
			c.log.Warn("client: server is behind the batches it acknowledged", "server_last", last, "next", c.nextSeq)
		}
		c.nextSeq = last + 1
	case lowest != last+1:
		c.log.Warn("client: server lacks batches; renumbering pending batches", "server_last", last, "lowest_pending", lowest)
		for _, b := range c.pending {
			if b.seq > last {
				b.seq = 0
			}
		}
		c.nextSeq = last + 1
	}
	c.broadcastLocked()
}

// endSession requeues what was in flight.
func (c *Client) endSession() {
	c.mu.Lock()
	for _, b := range c.pending {
		if b.state == stInflight {
			b.state = stQueued
		}
	}
	c.sessionErr = nil
	c.mu.Unlock()
}

type sendItem struct {
	b       *pendingBatch
	seq     uint64
	id, tx  uint64
	retry   bool
	ts      int64
	entries []Entry
}

// writeLoop is the only sender on the stream.
func (c *Client) writeLoop(stream cdcStream, readerDone <-chan struct{}, readerErr *error) error {
	var buf, corr []byte
	var nextHB time.Time
	if c.cfg.heartbeatInterval > 0 {
		nextHB = c.clock.Now().Add(c.cfg.heartbeatInterval)
	}
	for {
		c.mu.Lock()
		if c.stopping {
			c.mu.Unlock()
			return c.closeStream(stream, readerDone)
		}
		if err := c.sessionErr; err != nil {
			c.sessionErr = nil
			c.mu.Unlock()
			return err
		}
		if c.failErr != nil {
			c.mu.Unlock()
			return errStopped
		}
		now := c.clock.Now()
		wait := time.Duration(math.MaxInt64)
		var item *sendItem
		var req *lakehousev1.StreamRequest
		// Ack timeout of the oldest batch in flight.
		for _, b := range c.pending {
			if b.state != stInflight {
				continue
			}
			dl := b.lastSent.Add(c.cfg.ackTimeout)
			if !now.Before(dl) {
				b.failures++
				b.lastReason = lakehousev1.NackReason_NACK_REASON_UNSPECIFIED
				c.mu.Unlock()
				return fmt.Errorf("%w: batch %d after %s", ErrAckTimeout, b.seq, c.cfg.ackTimeout)
			}
			wait = min(wait, dl.Sub(now))
			break
		}
		if now.Before(c.resumeAt) {
			wait = min(wait, c.resumeAt.Sub(now))
		} else if c.slow && c.inflightLocked() > 0 {
			// wait for an ack
		} else if b := c.firstQueuedLocked(); b != nil {
			readyAt, probeOut := c.breaker.readyAt()
			switch {
			case probeOut:
				// wait for the probe's outcome
			case !readyAt.IsZero() && now.Before(readyAt):
				wait = min(wait, readyAt.Sub(now))
			default:
				if ok, _, _, _ := c.breaker.acquire(false); ok {
					item = c.prepareLocked(b, now)
				}
			}
		}
		if item == nil && !nextHB.IsZero() {
			if !now.Before(nextHB) {
				pe := 0
				for _, b := range c.pending {
					pe += len(b.entries)
				}
				req = &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{Heartbeat: &lakehousev1.Heartbeat{
					TimestampMs: time.Now().UnixMilli(), PendingEntries: uint64(pe),
				}}}
				c.st.heartbeats++
				nextHB = now.Add(c.cfg.heartbeatInterval)
			} else {
				wait = min(wait, nextHB.Sub(now))
			}
		}
		c.mu.Unlock()
		c.flushEvents()

		if item != nil {
			corr = appendCorr(corr[:0], item.id, item.tx)
			var err error
			req, buf, err = c.encode(item, buf, corr)
			if err != nil {
				c.breaker.release()
				c.mu.Lock()
				c.giveUpLocked(item.b, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, fmt.Errorf("client: encoding batch: %w", err), true)
				c.mu.Unlock()
				c.flushEvents()
				continue
			}
			size := len(buf)
			if c.cfg.mode == ModeStructured {
				size = item.b.nbytes
			}
			c.mu.Lock()
			c.st.bytesSent += uint64(size)
			item.b.lastSize = size
			c.mu.Unlock()
		}
		if req != nil {
			if err := stream.Send(req); err != nil {
				t := c.clock.NewTimer(time.Second)
				select {
				case <-readerDone:
					err = *readerErr
				case <-t.C():
				}
				t.Stop()
				return streamErr(err, nil)
			}
			continue
		}
		var tc <-chan time.Time
		var t Timer
		if wait != time.Duration(math.MaxInt64) {
			t = c.clock.NewTimer(wait)
			tc = t.C()
		}
		var err error
		select {
		case <-c.wake:
		case <-tc:
		case <-readerDone:
			err = streamErr(*readerErr, nil)
		case <-c.ctx.Done():
			err = errStopped
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return err
		}
	}
}

// closeStream half-closes the stream and waits briefly for the server to end it.
func (c *Client) closeStream(stream cdcStream, readerDone <-chan struct{}) error {
	if err := stream.CloseSend(); err != nil {
		return errStopped
	}
	t := c.clock.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-readerDone:
	case <-t.C():
	case <-c.ctx.Done():
	}
	return errStopped
}

func (c *Client) inflightLocked() int {
	n := 0
	for _, b := range c.pending {
		if b.state == stInflight {
			n++
		}
	}
	return n
}

func (c *Client) firstQueuedLocked() *pendingBatch {
	for _, b := range c.pending {
		if b.state == stQueued {
			return b
		}
	}
	return nil
}

// prepareLocked numbers b if needed and marks it in flight.
func (c *Client) prepareLocked(b *pendingBatch, now time.Time) *sendItem {
	if b.seq == 0 {
		b.seq = c.nextSeq
		c.nextSeq++
	}
	c.txCounter++
	b.tx = c.txCounter
	b.attempts++
	if b.attempts == 1 {
		c.st.batchesSent++
		c.st.entriesSent += uint64(len(b.entries))
		b.firstSent = now
	} else {
		c.st.retried++
	}
	b.state = stInflight
	b.lastSent = now
	return &sendItem{b: b, seq: b.seq, id: b.id, tx: b.tx, retry: b.attempts > 1, ts: b.ts, entries: b.entries}
}

// encode builds the request for item, reusing buf for the binary frame.
func (c *Client) encode(item *sendItem, buf, corr []byte) (*lakehousev1.StreamRequest, []byte, error) {
	if c.cfg.mode == ModeStructured {
		pb := &lakehousev1.Batch{
			SequenceNumber: item.seq,
			TimestampMs:    item.ts,
			SourceId:       c.sourceID,
			CorrelationId:  string(corr),
			IsRetry:        item.retry,
			Entries:        make([]*lakehousev1.Entry, len(item.entries)),
		}
		for i := range item.entries {
			e := &item.entries[i]
			if e.Op > codec.OpDelete {
				return nil, buf, fmt.Errorf("entries[%d]: %w", i, codec.ErrUnknownOperation)
			}
			pb.Entries[i] = &lakehousev1.Entry{
				Sequence:    e.Sequence,
				TimestampMs: int64(e.Timestamp),
				Operation:   protomap.Operation(e.Op),
				Table:       string(e.Table),
				RowId:       string(e.RowID),
				Before:      string(e.Before),
				After:       string(e.After),
			}
		}
		return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: pb}}, buf, nil
	}
	cb := codec.Batch{
		Timestamp:     uint64(item.ts),
		Sequence:      item.seq,
		Retry:         item.retry,
		SourceID:      c.srcBytes,
		CorrelationID: corr,
		Entries:       item.entries,
	}
	frame, err := codec.AppendBatch(buf[:0], &cb)
	if err != nil {
		return nil, buf, err
	}
	return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}, frame, nil
}

// ---- responses ----

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

// lookupLocked finds the batch an ack or nack is about: by the batch id in
// the correlation id when present, else by number. txOK says whether the
// answer is about the batch's current transmission.
func (c *Client) lookupLocked(seq uint64, corr string) (b *pendingBatch, txOK bool) {
	if id, tx, ok := parseCorr(corr); ok {
		for _, p := range c.pending {
			if p.id == id {
				return p, p.tx == tx
			}
		}
		return nil, false
	}
	if seq == 0 {
		return nil, false
	}
	for _, p := range c.pending {
		if p.seq == seq {
			return p, true
		}
	}
	return nil, false
}

func (c *Client) onAckLocked(a *lakehousev1.Ack, now time.Time) {
	b, _ := c.lookupLocked(a.GetSequenceNumber(), a.GetCorrelationId())
	if d := a.GetDetails(); d != nil && d.GetPersistedSequence() > c.persistedSeq {
		defer c.persistedLocked(d.GetPersistedSequence(), 0, now, false)
	}
	if b == nil {
		c.st.staleAcks++
		return
	}
	if b.state == stAcked {
		if a.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_PERSISTED {
			c.removeLocked(b)
		}
		return
	}
	c.breaker.Success()
	c.seqBounces = 0
	// BUFFERED asks to slow down: keep one batch in flight until the server
	// acks OK again (this avoids BUFFER_FULL and its long retry delay).
	c.slow = a.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_BUFFERED
	c.acceptLocked(b, a.GetStatus(), a.GetDetails(), now, true)
	c.wakeWriter()
}

// acceptLocked records b as acknowledged; it reports whether b left pending.
func (c *Client) acceptLocked(b *pendingBatch, st lakehousev1.AckStatus, d *lakehousev1.AckDetails, now time.Time, real bool) bool {
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
		c.ackHist.Record(ack.Latency)
	}
	c.st.batchesAcked++
	c.st.entriesAcked += uint64(len(b.entries))
	if st == lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		c.st.duplicates++
	}
	c.lastAcked = max(c.lastAcked, b.seq)
	b.ack = ack
	c.signalLocked(b)
	if f := c.cfg.onAck; f != nil {
		c.emit(func() { f(ack) })
	}
	persisted := st == lakehousev1.AckStatus_ACK_STATUS_PERSISTED || (b.seq != 0 && b.seq <= c.persistedSeq)
	if !persisted && !b.firstSent.IsZero() {
		if len(c.watch) >= maxWatch {
			c.watch = c.watch[1:]
		}
		c.watch = append(c.watch, watchItem{seq: b.seq, firstSent: b.firstSent})
	}
	c.broadcastLocked()
	if c.cfg.waitPersisted && !persisted {
		b.state = stAcked
		return false
	}
	c.removeLocked(b)
	return true
}

func (c *Client) removeLocked(b *pendingBatch) {
	if i := c.indexLocked(b); i >= 0 {
		c.pending = append(c.pending[:i], c.pending[i+1:]...)
		c.broadcastLocked()
	}
}

func (c *Client) persistedLocked(seq, entrySeq uint64, now time.Time, event bool) {
	if seq > c.persistedSeq {
		c.persistedSeq = seq
	}
	var lat time.Duration
	n := 0
	for n < len(c.watch) && c.watch[n].seq <= seq {
		lat = now.Sub(c.watch[n].firstSent)
		c.persistHist.Record(lat)
		n++
	}
	c.watch = c.watch[n:]
	if c.cfg.waitPersisted {
		for i := 0; i < len(c.pending); {
			b := c.pending[i]
			if b.seq != 0 && b.seq <= c.persistedSeq {
				if b.state != stAcked {
					c.acceptLocked(b, lakehousev1.AckStatus_ACK_STATUS_PERSISTED, nil, now, false)
				} else {
					c.removeLocked(b)
				}
				continue
			}
			i++
		}
	}
	if event {
		if f := c.cfg.onPersisted; f != nil {
			p := Persisted{Sequence: seq, EntrySequence: entrySeq, Latency: lat}
			c.emit(func() { f(p) })
		}
	}
	c.broadcastLocked()
}

func (c *Client) onNackLocked(n *lakehousev1.Nack, now time.Time) {
	nk := Nack{
		Sequence:         n.GetSequenceNumber(),
		Reason:           n.GetReason(),
		Message:          n.GetErrorMessage(),
		RetryDelay:       time.Duration(n.GetRetryDelayMs()) * time.Millisecond,
		ExpectedSequence: n.GetExpectedSequence(),
	}
	b, txOK := c.lookupLocked(n.GetSequenceNumber(), n.GetCorrelationId())
	if b == nil || !txOK || b.state != stInflight {
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
		d := nk.RetryDelay
		if d <= 0 {
			d = c.backoff(1, c.cfg.retryDelay)
		}
		c.rewindLocked(b)
		c.resumeAt = maxTime(c.resumeAt, now.Add(d))
		c.slow = true // resume one batch at a time until an OK ack
	case lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT:
		c.giveUpLocked(b, nk.Reason, &NackError{Nack: nk}, true)
	case lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN:
		c.rewindLocked(b)
		c.sessionErr = fmt.Errorf("%w: %s", ErrShuttingDown, nk.Message)
	case lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE:
		c.invalidSequenceLocked(b, nk, now)
	default: // INTERNAL_ERROR and unknown reasons: retry with backoff
		c.failureLocked(b, nk, now)
	}
	c.broadcastLocked()
	c.wakeWriter()
}

// invalidSequenceLocked handles INVALID_SEQUENCE for b (in flight, current
// transmission): the server expects batch E = nk.ExpectedSequence.
func (c *Client) invalidSequenceLocked(b *pendingBatch, nk Nack, now time.Time) {
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
	for _, p := range c.pending {
		if p.seq == exp && p.state != stAcked {
			// Batch exp is still on its way (or queued for a resend): b was
			// refused only because it came first. Resend b after exp; if exp
			// is in flight, back off so that b does not bounce until exp's
			// fate is known.
			c.rewindLocked(b)
			if p.state == stInflight {
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
func (c *Client) failureLocked(b *pendingBatch, nk Nack, now time.Time) {
	c.breaker.Failure()
	b.failures++
	if b.failures > c.cfg.maxRetries {
		c.giveUpLocked(b, nk.Reason, &NackError{Nack: nk}, true)
		return
	}
	c.rewindLocked(b)
	c.resumeAt = maxTime(c.resumeAt, now.Add(c.backoff(b.failures, c.cfg.retryDelay)))
}

// rewindLocked queues b and every later batch in flight for resending (the
// server refuses what follows a refused batch).
func (c *Client) rewindLocked(b *pendingBatch) {
	i := c.indexLocked(b)
	if i < 0 {
		return
	}
	for _, p := range c.pending[i:] {
		if p.state == stInflight {
			p.state = stQueued
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// ---- batch timer ----

// sealer sends the current batch once it is older than the batch timeout.
func (c *Client) sealer() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		wait := time.Duration(-1)
		var ch <-chan struct{}
		if len(c.cur) > 0 && c.failErr == nil {
			now := c.clock.Now()
			dl := c.curStart.Add(c.cfg.batchTimeout)
			if !now.Before(dl) {
				if len(c.pending) < c.cfg.maxPending || c.closing {
					c.sealLocked()
					c.mu.Unlock()
					continue
				}
				ch = c.changed
			} else {
				wait = dl.Sub(now)
			}
		}
		c.mu.Unlock()
		var tc <-chan time.Time
		var t Timer
		if wait >= 0 {
			t = c.clock.NewTimer(wait)
			tc = t.C()
		}
		select {
		case <-c.sealWake:
		case <-ch:
		case <-tc:
		case <-c.ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if c.ctx.Err() != nil {
			return
		}
	}
}
