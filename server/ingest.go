package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server/wal"
)

// reply is the answer to one batch: ready now, or once its write-ahead log
// append is durable; or a stream flush, started once every reply before it
// is sent. Replies are handled in the order the requests arrived.
type reply struct {
	resp    *lakehousev1.StreamResponse // set when the answer is ready
	pending *pendingBatch               // set when the batch waits for its append
	flush   *lakehousev1.FlushReason    // set for a stream flush
	// walGen is the count of write-ahead log failures when the batch was
	// judged. A ready ack (a duplicate) may rest on an earlier batch whose
	// append was still pending; if a failure happened since, it is not
	// sent (see runReplies).
	walGen uint64
}

// pendingBatch is an accepted batch whose append is in flight.
type pendingBatch struct {
	done  <-chan error
	bb    *bufBatch
	lower wal.LSN // registered lower bound of its LSN
	corr  string
	seq   uint64 // the batch number the client sent
	dups  int
	start time.Time
	// What the sequencing was before the batch, to roll it back if the
	// append fails: the previous highest entry sequence and, for entry
	// mode, the entry sequences added to the dedup window.
	prevLastEntry uint64
	added         []uint64
}

// accept runs one batch frame through sequencing and starts its write-ahead
// log append, without waiting for it: while one batch waits for the group
// commit's fsync, the stream's next batch is already being decoded. complete
// finishes it. An error ends the stream (the session was fenced). opts are
// s.decode for a client's frame; for one the server encoded from a structured
// batch, without the JSON check and the checksum.
func (s *Server) accept(sess *session, frame []byte, opts codec.DecodeOptions) (r reply, err error) {
	now := time.Now()
	nowMs := now.UnixMilli()
	src := sess.src
	if len(frame) > s.cfg.MaxMessageSize {
		seq, corr := peekIDs(frame)
		return ready(s.nack(seq, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT,
			s.tooLarge(len(frame)), 0)), nil
	}
	if h, err := codec.PeekBatchHeader(frame); err == nil && int64(h.EntryCount) > int64(s.cfg.Limits.MaxBatchEntries) {
		// Refused before decoding allocates its entries (limits.go).
		return ready(s.nack(h.Sequence, string(h.CorrelationID), lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT,
			s.cfg.Limits.tooManyEntries(h.EntryCount), 0)), nil
	}
	b := &sess.decoded
	if err := codec.DecodeBatchInto(b, frame, opts); err != nil {
		seq, corr := peekIDs(frame)
		return ready(s.nack(seq, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, err.Error(), 0)), nil
	}
	if !b.ChecksumOK && !opts.SkipChecksum {
		s.m.checksumMismatches.Inc()
	}
	corr := string(b.CorrelationID)
	if len(b.SourceID) > 0 && string(b.SourceID) != src.id {
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT,
			fmt.Sprintf("sourceDoId %q (batch.source_id) does not match the stream's source %q: a batch is always written under its stream's source", b.SourceID, src.id), 0)), nil
	}
	if err := validateEntries(b.Entries, sess.mode); err != nil {
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, err.Error(), 0)), nil
	}

	src.mu.Lock()
	defer src.mu.Unlock()
	if src.owner != sess {
		return reply{}, errFenced
	}
	epoch := src.epoch.Load()
	if s.coord != nil && epoch == 0 {
		return reply{}, errLeaseLost
	}
	if s.coord != nil && !now.Before(src.leaseExpiry) {
		// Acked ok now, the batch could never commit here if another
		// instance took the source meanwhile: refuse before the
		// renewal loop notices (lease.go).
		s.log.Warn("source lease expired without renewal; ending its stream", "source", src.id,
			"expired_for", now.Sub(src.leaseExpiry).Round(time.Millisecond))
		return reply{}, errLeaseExpired
	}
	if s.isDraining() {
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN, "server is shutting down", 0)), nil
	}
	// Held until the append is enqueued: the log's recovery cannot happen
	// between this check and the enqueue (an append enqueued before it
	// fails, one after it is judged after it).
	s.walGate.RLock()
	defer s.walGate.RUnlock()
	gen, down, delay := s.walCheck()
	defer func() { r.walGen = gen }()
	if down || (src.appending > 0 && src.appendGen != gen) {
		// The log failed: refuse (retryably) until it has recovered and
		// this source's appends queued before the failure have settled
		// (their failures roll its sequencing back).
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL,
			"write-ahead log failed (disk full or I/O error) and is recovering: retry after the delay",
			uint32(delay.Milliseconds()))), nil
	}

	var seq uint64
	dups := 0
	var added []uint64
	switch sess.mode {
	case lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY:
		src.dedup.expire(nowMs)
		// kept is made at the first duplicate only: most batches have none.
		var kept []codec.Entry
		// Entries of a batch normally ascend, so a repeat inside the batch
		// is only possible (and only checked with a map) when they do not.
		var inBatch map[uint64]struct{}
		if !ascending(b.Entries) {
			inBatch = make(map[uint64]struct{}, len(b.Entries))
		}
		for i := range b.Entries {
			q := b.Entries[i].Sequence
			dup := src.dedup.has(q)
			if !dup && inBatch != nil {
				if _, dup = inBatch[q]; !dup {
					inBatch[q] = struct{}{}
				}
			}
			switch {
			case dup && kept == nil:
				kept = append(make([]codec.Entry, 0, len(b.Entries)), b.Entries[:i]...)
				fallthrough
			case dup:
				dups++
			case kept != nil:
				kept = append(kept, b.Entries[i])
			}
		}
		if len(b.Entries) > 0 && dups == len(b.Entries) {
			return ready(s.ack(b.Sequence, corr, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, 0, uint32(dups))), nil
		}
		if len(b.Entries) == 0 {
			return ready(s.ack(b.Sequence, corr, s.okStatus(), 0, 0)), nil
		}
		if dups > 0 {
			b.Entries = kept
			var err error
			if frame, err = codec.EncodeBatch(b); err != nil {
				return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR, err.Error(), 0)), nil
			}
			if err := codec.DecodeBatchInto(b, frame, codec.DecodeOptions{SkipChecksum: true}); err != nil {
				return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR, err.Error(), 0)), nil
			}
		}
		seq = src.lastSeq + 1
	default:
		switch {
		case b.Sequence == 0:
			return ready(s.invalidSequence(b, src.lastSeq+1)), nil
		case b.Sequence <= src.lastSeq:
			return ready(s.ack(b.Sequence, corr, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, 0, uint32(len(b.Entries)))), nil
		case b.Sequence != src.lastSeq+1:
			return ready(s.invalidSequence(b, src.lastSeq+1)), nil
		}
		if err := checkAfterLast(b.Entries, src.lastEntry); err != nil {
			return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, err.Error(), 0)), nil
		}
		seq = b.Sequence
	}

	size := int64(len(frame))
	// Source rate limit (ratelimit.go): charged once the batch is known to
	// be new, refused before anything is sequenced or stored.
	if d := s.rates.admit(src.id, sess.rate, len(b.Entries), len(frame), now); d > 0 {
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_RATE_LIMITED, sess.rate.rateLimitedMsg(), delayMs(d))), nil
	}
	lower := s.buf.reserve(size)
	rec := walRecord{SourceID: src.id, ShardName: src.shard, Mode: sess.mode, Seq: seq, ArrivalMs: nowMs, Epoch: epoch, Frame: frame}
	start := time.Now()
	// Enqueued under src.mu, so the log holds a source's batches in order.
	// The log completes every queued append, even on Close, so complete
	// cannot hang; and an append once queued counts as accepted.
	lsn, done := s.appendRecord(&rec)
	if lsn == 0 {
		err := <-done
		s.buf.unreserve(size, lower)
		s.rates.refund(src.id, len(b.Entries), len(frame), now)
		if errors.Is(err, wal.ErrTooLarge) {
			// Cannot happen for a frame within the limit (record.go
			// checks the sizes at build time); never retry it if it does.
			return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, err.Error(), 0)), nil
		}
		if errors.Is(err, wal.ErrFull) {
			s.kickFlush()
			return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL,
				"write-ahead log full: retry after the delay", uint32(s.retryDelay().Milliseconds()))), nil
		}
		if errors.Is(err, wal.ErrFailed) {
			s.failWAL(err)
			return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL,
				"write-ahead log failed (disk full or I/O error) and is recovering: retry after the delay",
				uint32(s.walRetryDelay().Milliseconds()))), nil
		}
		s.log.Error("write-ahead log append failed", "source", src.id, "seq", b.Sequence, "error", err)
		return ready(s.nack(b.Sequence, corr, lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR,
			"write-ahead log append failed", uint32(s.cfg.RetryDelay.Milliseconds()))), nil
	}
	// Tentatively accepted: later batches of this stream sequence after it.
	// If the append fails, every append queued after it fails too (the log
	// refuses everything until it recovers), complete rolls the sequencing
	// back, and the source accepts nothing meanwhile (appendGen).
	last := maxEntrySeq(b)
	prevLastEntry := src.lastEntry
	src.lastSeq = seq
	src.lastEntry = max(src.lastEntry, last)
	if src.dedup != nil && sess.mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
		added = make([]uint64, 0, len(b.Entries))
		for i := range b.Entries {
			if !src.dedup.has(b.Entries[i].Sequence) {
				added = append(added, b.Entries[i].Sequence)
			}
			src.dedup.add(b.Entries[i].Sequence, nowMs)
		}
	}
	if src.appending == 0 {
		src.appendGen = gen
	}
	src.appending++
	bb := &bufBatch{src: src, shard: src.shard, seq: seq, lsn: wal.LSN(lsn), frame: frame, entries: len(b.Entries),
		size: size, arrivedMs: nowMs, lastEntry: last, firstEntry: minEntrySeq(b), epoch: epoch,
		entryMode: sess.mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY}
	return reply{pending: &pendingBatch{done: done, bb: bb, lower: lower, corr: corr, seq: b.Sequence, dups: dups, start: start,
		prevLastEntry: prevLastEntry, added: added}}, nil
}

// appendRecord queues rec's append to the log, encoded in place in the
// log's own buffer (one copy of the frame, not two).
func (s *Server) appendRecord(rec *walRecord) (wal.LSN, <-chan error) {
	return s.wal.AppendAsyncFunc(rec.size(), rec.putTo)
}

// complete waits for a pending batch's append and returns its answer, and
// whether the batch is durable. The caller enqueues a durable batch before
// sending the answer, whether or not the send then succeeds (a batch in the
// log is accepted), so a flush requested after the ack covers it. A flush may
// thus commit a batch whose ack is not out yet; the session caps its
// persisted messages at the last ack sent (session.acked), so a persisted
// watermark never overtakes the ack of a batch it covers.
func (s *Server) complete(p *pendingBatch) (*lakehousev1.StreamResponse, bool) {
	err := <-p.done
	s.m.appendSeconds.Observe(time.Since(p.start).Seconds())
	bb, src := p.bb, p.bb.src
	if err != nil {
		// Not durable, never acknowledged: roll the source's sequencing
		// back so that the resent batch is accepted, not judged a
		// duplicate. Every later append of the source failed too (the log
		// refuses appends from the failure until it recovers), and they
		// complete after this one, so taking the minimum restores the
		// state before the first failed batch.
		if errors.Is(err, wal.ErrFailed) {
			s.failWAL(err)
		}
		src.mu.Lock()
		if src.lastSeq >= bb.seq {
			src.lastSeq = bb.seq - 1
		}
		src.lastEntry = min(src.lastEntry, p.prevLastEntry)
		if src.dedup != nil {
			src.dedup.remove(p.added)
		}
		src.appending--
		src.settled.Broadcast()
		src.mu.Unlock()
		s.buf.unreserve(bb.size, p.lower)
		if !errors.Is(err, wal.ErrFailed) {
			s.log.Error("write-ahead log append failed", "source", src.id, "seq", p.seq, "error", err)
			return s.nack(p.seq, p.corr, lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR,
				"write-ahead log append failed", uint32(s.cfg.RetryDelay.Milliseconds())), false
		}
		return s.nack(p.seq, p.corr, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL,
			"write-ahead log failed (disk full or I/O error) and is recovering: retry after the delay",
			uint32(s.walRetryDelay().Milliseconds())), false
	}
	s.m.bytes.Add(float64(bb.size))
	util := s.buf.stats(false).utilization // the batch counts already (reserved)
	s.mu.Lock()
	status := lakehousev1.AckStatus_ACK_STATUS_OK
	switch {
	case s.recovery.active:
		status = lakehousev1.AckStatus_ACK_STATUS_FALLBACK
	case util > s.cfg.BufferedThreshold:
		status = lakehousev1.AckStatus_ACK_STATUS_BUFFERED
	}
	persisted := src.persistedSeq
	s.mu.Unlock()
	a := s.ack(p.seq, p.corr, status, uint32(bb.entries), uint32(p.dups))
	a.GetAck().Details.BufferUtilization = util
	a.GetAck().Details.PersistedSequence = persisted
	a.GetAck().Details.LastEntrySequence = bb.lastEntry
	return a, true
}

// enqueue moves a durable batch, whose ack is sent (or its stream gone),
// into the buffer, and settles its append for the source.
func (s *Server) enqueue(p *pendingBatch) {
	bb, src := p.bb, p.bb.src
	bs := s.buf.add(bb, p.lower)
	s.mu.Lock()
	src.batches++
	src.entries += uint64(bb.entries)
	src.lastSeenMs = bb.arrivedMs
	s.mu.Unlock()
	src.mu.Lock()
	src.appending--
	src.settled.Broadcast()
	src.mu.Unlock()
	if s.thresholdReached(bs) {
		s.kickFlush()
	}
}

// failWAL records a write-ahead log failure (an append error wrapping
// wal.ErrFailed) and starts its recovery. From now on batches are nacked
// buffer_full with a retry delay until the log has recovered; buffered
// batches keep being committed meanwhile.
func (s *Server) failWAL(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wf.down || s.draining {
		return // already recovering; or stopping, and the next start recovers
	}
	s.wf = walFault{down: true, gen: s.wf.gen + 1, since: time.Now()}
	s.log.Error("write-ahead log failed; refusing batches (buffer_full) while it recovers", "error", err)
	s.bg.Add(1)
	go s.recoverWAL()
}

// recoverWAL retries the log's recovery with backoff until it succeeds (the
// fault is gone) or the server stops. Recovery cuts the log back to the
// last acknowledged batch, starts a new segment and probes it with a write
// and an fsync (wal.Log.Recover).
func (s *Server) recoverWAL() {
	defer s.bg.Done()
	delay := s.cfg.WALRecoveryDelay
	for attempt := 1; ; attempt++ {
		s.walGate.Lock()
		err := s.wal.Recover()
		if err == nil {
			s.mu.Lock()
			down := time.Since(s.wf.since)
			s.wf.down, s.wf.attempts, s.wf.nextProbe = false, 0, time.Time{}
			s.mu.Unlock()
			s.walGate.Unlock()
			s.log.Info("write-ahead log recovered; accepting batches again", "attempts", attempt, "down_for", down.Round(time.Millisecond))
			return
		}
		s.mu.Lock()
		s.wf.attempts = attempt
		s.wf.nextProbe = time.Now().Add(delay)
		s.mu.Unlock()
		s.walGate.Unlock()
		if errors.Is(err, wal.ErrClosed) {
			return
		}
		s.log.Warn("write-ahead log still failing; retrying", "attempt", attempt, "retry_in", delay, "error", err)
		select {
		case <-s.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, s.cfg.WALRecoveryMaxDelay)
	}
}

// walCheck reports the log's failure count, whether it is down, and the
// retry delay to suggest while it is.
func (s *Server) walCheck() (gen uint64, down bool, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wf.gen, s.wf.down, s.walRetryDelayLocked()
}

func (s *Server) walGeneration() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wf.gen
}

func (s *Server) walRetryDelay() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.walRetryDelayLocked()
}

// walRetryDelayLocked suggests when a batch refused because of a log
// failure may be accepted: at the next recovery probe, never sooner than
// minRetryDelay nor later than RetryDelay.
func (s *Server) walRetryDelayLocked() time.Duration {
	d := minRetryDelay
	if s.wf.down && !s.wf.nextProbe.IsZero() {
		d = time.Until(s.wf.nextProbe)
	}
	return min(max(d, minRetryDelay), s.cfg.RetryDelay)
}

func ready(resp *lakehousev1.StreamResponse) reply { return reply{resp: resp} }

// ascending reports whether entry sequences strictly increase.
func ascending(es []codec.Entry) bool {
	for i := 1; i < len(es); i++ {
		if es[i].Sequence <= es[i-1].Sequence {
			return false
		}
	}
	return true
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// okStatus is the status of an accepted batch given the server's state.
func (s *Server) okStatus() lakehousev1.AckStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recovery.active {
		return lakehousev1.AckStatus_ACK_STATUS_FALLBACK
	}
	return lakehousev1.AckStatus_ACK_STATUS_OK
}

// retryDelay suggests when a batch refused because the log is full may find
// room, never more than RetryDelay, never less than minRetryDelay: while
// commits fail, RetryDelay; during a stage or flush, when it is expected to
// end (from the last one's rate); otherwise (the refusal kicked a commit,
// which releases the log) the last flush's duration. A fixed delay of
// seconds would leave the stream idle long after the log has room again.
func (s *Server) retryDelay() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.recovery.active:
		return s.cfg.RetryDelay
	case s.flushing && s.flushRate > 0:
		expected := time.Duration(float64(s.buf.stats(false).inflBytes) / s.flushRate * float64(time.Millisecond))
		left := time.Until(s.flushStartT.Add(expected))
		return min(max(left, minRetryDelay), s.cfg.RetryDelay)
	case s.lastFlush != nil:
		return min(max(time.Duration(s.lastFlush.DurationMs)*time.Millisecond, minRetryDelay), s.cfg.RetryDelay)
	}
	return min(4*minRetryDelay, s.cfg.RetryDelay)
}

// minRetryDelay keeps refused clients from spinning.
const minRetryDelay = 100 * time.Millisecond

func (s *Server) ack(seq uint64, corr string, st lakehousev1.AckStatus, accepted, dups uint32) *lakehousev1.StreamResponse {
	return ackResp(&lakehousev1.Ack{
		SequenceNumber: seq,
		Status:         st,
		CorrelationId:  corr,
		TimestampMs:    time.Now().UnixMilli(),
		Details:        &lakehousev1.AckDetails{EntriesAccepted: accepted, EntriesDuplicate: dups},
	})
}

func (s *Server) nack(seq uint64, corr string, reason lakehousev1.NackReason, msg string, delayMs uint32) *lakehousev1.StreamResponse {
	retry := reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT
	return nackResp(&lakehousev1.Nack{
		SequenceNumber: seq,
		Reason:         reason,
		ErrorMessage:   msg,
		ShouldRetry:    retry,
		RetryDelayMs:   delayMs,
		CorrelationId:  corr,
		TimestampMs:    time.Now().UnixMilli(),
	})
}

// tooLarge is the nack message for a batch of size bytes over the limit.
func (s *Server) tooLarge(size int) string {
	return fmt.Sprintf("batch of %d bytes exceeds the %d-byte limit (Connected.max_message_size)", size, s.cfg.MaxMessageSize)
}

func (s *Server) invalidSequence(b *codec.Batch, expected uint64) *lakehousev1.StreamResponse {
	r := s.nack(b.Sequence, string(b.CorrelationID), lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE,
		fmt.Sprintf("batch %d out of sequence: expected %d", b.Sequence, expected), 0)
	r.GetNack().ExpectedSequence = expected
	return r
}

// peekIDs reads the sequence number and correlation id of a frame that is
// refused before decoding (oversized, undecodable), where the frame is intact
// enough to hold them, so the nack reaches the right batch.
func peekIDs(frame []byte) (uint64, string) {
	h, _ := codec.PeekBatchHeader(frame)
	return h.Sequence, string(h.CorrelationID)
}
