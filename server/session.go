package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/proflabel"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

type stream = grpc.BidiStreamingServer[lakehousev1.StreamRequest, lakehousev1.StreamResponse]

// session is one live Stream of one source.
type session struct {
	srv      *Server
	src      *source
	mode     lakehousev1.SequenceMode
	stream   stream
	ctx      context.Context
	cancel   context.CancelCauseFunc
	finished chan struct{}
	rate     rateLimit // the source's rate limit on this stream (ratelimit.go)

	// Persisted watermarks and flush results reach the session from the
	// flusher; the session's goroutine is the only one that sends.
	persistedSig   chan struct{}
	persistedSeq   atomic.Uint64
	persistedEntry atomic.Uint64
	// The last batch whose ack was sent (or, at attach, every earlier
	// stream's batches). A persisted message never goes beyond it: a flush
	// may commit a durable batch before its ack is out, and clients count a
	// batch persisted only once acked.
	ackedSeq   atomic.Uint64
	ackedEntry atomic.Uint64
	// What the last persisted message said; only the session goroutine
	// touches them.
	sentSeq, sentEntry uint64
	flushDone          chan *lakehousev1.FlushResult
	pendingFlushes     int // stream flushes not yet answered; only the session goroutine touches it
	// decoded is accept's decoding scratch, reused so that a batch's entries
	// are not allocated (and cleared) anew; only the session goroutine
	// touches it, and nothing keeps it after accept.
	decoded codec.Batch

	// sendMu serializes sends (gRPC allows one sender at a time);
	// returned, set as the handler returns, stops a send that was waiting
	// for it from starting after the stream has ended.
	sendMu      sync.Mutex
	returned    atomic.Bool
	slots       chan struct{} // one per batch between arrival and reply
	replies     replyQueue
	repliesDone chan struct{}
}

func (sess *session) close(cause error) { sess.cancel(cause) }

// notifyPersisted tells the session its source's batches up to seq are
// committed. It never blocks; successive watermarks coalesce, and a watermark
// lower than one already given (a late notification) changes nothing.
func (sess *session) notifyPersisted(seq, entry uint64) {
	storeMax(&sess.persistedSeq, seq)
	storeMax(&sess.persistedEntry, entry)
	select {
	case sess.persistedSig <- struct{}{}:
	default:
	}
}

// storeMax raises v to x unless it already holds more.
func storeMax(v *atomic.Uint64, x uint64) {
	for {
		old := v.Load()
		if old >= x || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// Stream implements the CDC stream.
func (s *Server) Stream(st stream) (err error) {
	proflabel.Do(st.Context(), proflabel.Ingest, func(context.Context) { err = s.stream(st) })
	return err
}

func (s *Server) stream(st stream) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	conn := first.GetConnect()
	if conn == nil {
		return status.Error(codes.InvalidArgument, "the first message of a stream must be connect")
	}
	if conn.GetSourceId() == "" || len(conn.GetSourceId()) > 0xFFFF || !utf8.ValidString(conn.GetSourceId()) {
		return status.Error(codes.InvalidArgument, "connect.source_id must be non-empty UTF-8 of at most 65535 bytes")
	}
	if len(conn.GetShardName()) > 0xFFFF || !utf8.ValidString(conn.GetShardName()) {
		return status.Error(codes.InvalidArgument, "connect.shard_name must be UTF-8 of at most 65535 bytes")
	}
	if v := conn.GetProtocolVersion(); v > 1 {
		return status.Errorf(codes.InvalidArgument, "protocol version %d is not supported (1 is)", v)
	}
	ctx, cancel := context.WithCancelCause(st.Context())
	sess := &session{
		srv: s, stream: st, ctx: ctx, cancel: cancel,
		finished:     make(chan struct{}),
		persistedSig: make(chan struct{}, 1),
		flushDone:    make(chan *lakehousev1.FlushResult, 1),
	}
	sess.rate = s.rates.streamLimit(ctx, s.cfg.Limits)
	sess.slots = make(chan struct{}, pipelineDepth)
	sess.replies.cond.L = &sess.replies.mu
	sess.repliesDone = make(chan struct{})
	defer sess.returned.Store(true) // runs last: see send
	defer close(sess.finished)
	defer cancel(nil)
	connected, err := s.attach(sess, conn)
	if err != nil {
		close(sess.repliesDone)
		var re *redirectError
		if errors.As(err, &re) {
			s.m.redirects.Inc()
			s.log.Debug("connect redirected to the source's owner", "source", conn.GetSourceId(), "addr", re.redirect.GetAddr())
			if serr := st.Send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Redirect{Redirect: re.redirect}}); serr != nil {
				return serr
			}
		}
		return statusFromErr(err)
	}
	defer s.detach(sess)
	go sess.runReplies()
	// Replies still queued are completed (and no longer sent) after the
	// stream ends; detach runs after that, so a successor sees them settled.
	defer func() {
		sess.replies.close()
		cancel(errStreamEnded)
	}()
	if err := st.Send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Connected{Connected: connected}}); err != nil {
		return err
	}
	s.log.Debug("stream connected", "source", sess.src.id, "mode", sess.mode, "last_sequence", connected.LastSequence)

	reqs := make(chan *lakehousev1.StreamRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	// After the client half-closes (as grpcurl does when its input ends),
	// the stream stays open until requested flushes have been answered.
	var eof bool
	for {
		select {
		case req := <-reqs:
			if err := sess.handle(req); err != nil {
				if errors.Is(err, errSendAbandoned) {
					return sess.end()
				}
				return statusFromErr(err)
			}
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			// Answer every batch before ending the stream.
			if err := sess.drainReplies(); err != nil {
				return statusFromErr(err)
			}
			if sess.pendingFlushes == 0 {
				return nil
			}
			eof, recvErr = true, nil
		case <-sess.persistedSig:
			if err := sess.sendPersisted(); err != nil {
				return sess.sendFailed(err)
			}
		case res := <-sess.flushDone:
			sess.pendingFlushes--
			// The flusher signals the watermark before it replies, so send
			// it first: persisted, then the status that reports the flush.
			select {
			case <-sess.persistedSig:
				if err := sess.sendPersisted(); err != nil {
					return sess.sendFailed(err)
				}
			default:
			}
			st := s.Status()
			st.LastFlush = res
			if err := sess.sendOwn(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Status{Status: st}}); err != nil {
				return sess.sendFailed(err)
			}
			if eof && sess.pendingFlushes == 0 {
				return nil
			}
		case <-ctx.Done():
			return sess.end()
		}
	}
}

// shutdownNackWait bounds how long a stream's shutting_down nack may wait
// to be sent. It is best-effort: a peer that does not read (its flow-control
// window full) would otherwise hold the stream, and the server's shutdown,
// until the connection dies.
const shutdownNackWait = time.Second

// end ends the stream once its context is done: on shutdown the client is
// told first (within shutdownNackWait), then the cause becomes the status.
func (sess *session) end() error {
	cause := context.Cause(sess.ctx)
	if errors.Is(cause, errShuttingDown) {
		wait, cancel := context.WithTimeout(context.Background(), shutdownNackWait)
		_ = sess.sendOrQuit(nackResp(&lakehousev1.Nack{
			Reason: lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN, ErrorMessage: "server is shutting down",
			ShouldRetry: true, TimestampMs: time.Now().UnixMilli(),
		}), wait.Done())
		cancel()
	}
	if errors.Is(cause, errFenced) || errors.Is(cause, errShuttingDown) {
		return statusFromErr(cause)
	}
	return status.FromContextError(sess.ctx.Err()).Err()
}

// sendFailed is the stream's end after a send of the session's goroutine
// failed or was abandoned.
func (sess *session) sendFailed(err error) error {
	if errors.Is(err, errSendAbandoned) {
		return sess.end()
	}
	return err
}

// send sends one response; the session goroutine and the reply goroutine
// both send, and a gRPC stream allows one sender at a time. A send that got
// the lock only after the handler returned (an abandoned sendOrQuit whose
// turn came when the stream ended) is not made: gRPC forbids sending on a
// stream whose handler has returned.
func (sess *session) send(r *lakehousev1.StreamResponse) error {
	sess.sendMu.Lock()
	defer sess.sendMu.Unlock()
	if sess.returned.Load() {
		return errStreamEnded
	}
	return sess.stream.Send(r)
}

// errSendAbandoned: the session's goroutine stopped waiting for a send.
var errSendAbandoned = errors.New("server: send abandoned")

// sendOwn is send for the session's goroutine (the handler's), which gives
// up once the stream's context is done (shutdown, takeover): it must stay
// free to return, because a send blocked by a peer that does not read (or
// waiting for the reply goroutine's blocked send) ends only when the stream
// does, and the stream ends when the handler returns.
func (sess *session) sendOwn(r *lakehousev1.StreamResponse) error {
	return sess.sendOrQuit(r, sess.ctx.Done())
}

// sendOrQuit sends r, or returns errSendAbandoned once quit is closed. An
// abandoned send stays pending until the stream ends (the handler returns),
// then fails; the reply goroutine sends nothing once the context is done.
func (sess *session) sendOrQuit(r *lakehousev1.StreamResponse, quit <-chan struct{}) error {
	done := make(chan error, 1)
	go func() { done <- sess.send(r) }()
	select {
	case err := <-done:
		return err
	case <-quit:
		return errSendAbandoned
	}
}

// pipelineDepth bounds the batches of one stream between arrival and ack:
// enough for a stream's next batches to join the group commit its previous
// ones wait for.
const pipelineDepth = 16

// batch accepts one batch frame and queues its reply. It waits for room in
// the pipeline first, so nothing is accepted that the session cannot answer.
func (sess *session) batch(frame []byte, opts codec.DecodeOptions) error {
	if err := sess.takeSlot(); err != nil {
		return err
	}
	r, err := sess.srv.accept(sess, frame, opts)
	if err != nil {
		<-sess.slots
		return err
	}
	sess.replies.push(r)
	return nil
}

// queue queues a reply that needs no append (a nack decided before accept, or
// a flush barrier). It takes a slot like a batch, because runReplies frees
// one slot per reply.
func (sess *session) queue(r reply) error {
	if err := sess.takeSlot(); err != nil {
		return err
	}
	sess.replies.push(r)
	return nil
}

func (sess *session) takeSlot() error {
	select {
	case sess.slots <- struct{}{}:
		return nil
	case <-sess.ctx.Done():
		return context.Cause(sess.ctx)
	}
}

// drainReplies waits until every queued reply has been sent, by taking every
// slot. No batch can be accepted afterwards.
func (sess *session) drainReplies() error {
	for range cap(sess.slots) {
		select {
		case sess.slots <- struct{}{}:
		case <-sess.ctx.Done():
			return context.Cause(sess.ctx)
		}
	}
	return nil
}

// replyQueue is an unbounded FIFO of replies (its length is bounded by the
// session's slots), so queuing never blocks the session goroutine.
type replyQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []reply
	closed bool
}

func (q *replyQueue) push(r reply) {
	q.mu.Lock()
	q.items = append(q.items, r)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *replyQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// pop returns the next reply, or false once the queue is closed and empty.
func (q *replyQueue) pop() (reply, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return reply{}, false
	}
	r := q.items[0]
	q.items[0] = reply{}
	q.items = q.items[1:]
	return r, true
}

// runReplies completes and sends replies in arrival order. It completes every
// queued batch even after the stream ended, because a batch whose append was
// queued is accepted and must reach the buffer, in order.
func (sess *session) runReplies() {
	defer close(sess.repliesDone)
	s := sess.srv
	dead := false
	for {
		r, ok := sess.replies.pop()
		if !ok {
			return
		}
		if r.flush != nil {
			// Every batch received before the flush is in the buffer and
			// its ack sent: the flush covers them.
			sess.startFlush(*r.flush)
			<-sess.slots
			continue
		}
		resp, durable := r.resp, false
		if r.pending != nil {
			if resp, durable = s.complete(r.pending); durable {
				// In the buffer before its ack is sent, so a flush that
				// the client requests once acked covers it.
				s.enqueue(r.pending)
			}
		} else if a := resp.GetAck(); a != nil && s.walGeneration() != r.walGen {
			// A duplicate may have been judged against a batch whose
			// append then failed (the log failed since): do not vouch for
			// it; the resend is judged again.
			resp = s.nack(a.SequenceNumber, a.CorrelationId, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL,
				"write-ahead log failed (disk full or I/O error): retry after the delay", uint32(s.walRetryDelay().Milliseconds()))
		}
		s.observe(resp)
		if !dead && sess.ctx.Err() == nil {
			if err := sess.send(resp); err != nil {
				dead = true
				sess.cancel(err)
			}
		}
		if durable {
			sess.acked(r.pending.bb)
		}
		<-sess.slots
	}
}

// startFlush runs a stream's flush without holding up the replies behind it;
// the session goroutine sends its status.
func (sess *session) startFlush(reason lakehousev1.FlushReason) {
	go func() {
		res, err := sess.srv.FlushNow(sess.ctx, reason)
		if err != nil {
			res = &lakehousev1.FlushResult{Error: err.Error(), Reason: reason}
		}
		select {
		case sess.flushDone <- res:
		case <-sess.ctx.Done():
		}
	}()
}

// acked records that bb's ack was sent, and wakes the session if a persisted
// watermark was waiting for it.
func (sess *session) acked(bb *bufBatch) {
	prevSeq, prevEntry := sess.ackedSeq.Load(), sess.ackedEntry.Load()
	storeMax(&sess.ackedSeq, bb.seq)
	storeMax(&sess.ackedEntry, bb.lastEntry)
	if sess.persistedSeq.Load() > prevSeq || sess.persistedEntry.Load() > prevEntry {
		select {
		case sess.persistedSig <- struct{}{}:
		default:
		}
	}
}

// sendPersisted sends the persisted watermark, capped at the last acked
// batch, unless it says nothing new.
func (sess *session) sendPersisted() error {
	seq := min(sess.persistedSeq.Load(), sess.ackedSeq.Load())
	entry := min(sess.persistedEntry.Load(), sess.ackedEntry.Load())
	if seq <= sess.sentSeq && entry <= sess.sentEntry {
		return nil
	}
	sess.sentSeq, sess.sentEntry = max(seq, sess.sentSeq), max(entry, sess.sentEntry)
	return sess.sendOwn(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Persisted{Persisted: &lakehousev1.Persisted{
		SequenceNumber: sess.sentSeq,
		EntrySequence:  sess.sentEntry,
		TimestampMs:    time.Now().UnixMilli(),
	}}})
}

// attach makes sess the live stream of its source, fencing the previous one.
func (s *Server) attach(sess *session, conn *lakehousev1.ConnectRequest) (*lakehousev1.Connected, error) {
	mode := conn.GetSequenceMode()
	if mode == lakehousev1.SequenceMode_SEQUENCE_MODE_UNSPECIFIED {
		mode = lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return nil, errShuttingDown
	}
	src := s.sourceLocked(conn.GetSourceId())
	s.sessions[sess] = struct{}{}
	src.lastSeenMs = time.Now().UnixMilli()
	s.mu.Unlock()
	unregister := func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}

	// Multi-instance mode (lease.go): the lease first, outside the
	// source's lock (a database round trip).
	var lease coord.Lease
	var asked time.Time
	if s.coord != nil {
		var err error
		resume := coord.Resume{LastAcked: conn.GetLastAckSequence(), ResendFrom: conn.GetResendFromSequence(),
			LastAckedEntry: conn.GetLastAckEntrySequence()}
		asked = time.Now()
		if lease, err = s.acquireLease(sess.ctx, src.id, resume); err != nil {
			unregister()
			return nil, err
		}
	}

	src.mu.Lock()
	defer src.mu.Unlock()
	// A stream its client has already abandoned must not fence the
	// client's live one: after a pause (SIGSTOP, a long GC) the server
	// reads connects that were buffered in its sockets, including those of
	// streams the client gave up on and replaced meanwhile; the newest
	// stream may then be attached first. Their contexts are cancelled (the
	// client reset the stream or closed the connection), so they are
	// refused here rather than taking the source over.
	if err := sess.ctx.Err(); err != nil {
		unregister()
		return nil, status.FromContextError(err).Err()
	}
	if old := src.owner; old != nil {
		old.close(errFenced)
		s.log.Info("stream taken over", "source", src.id)
	}
	src.owner = sess
	// The old stream's queued appends decide the last sequence: wait for
	// them (the old stream's reply goroutine completes them).
	for src.appending > 0 {
		src.settled.Wait()
	}
	if s.coord != nil {
		if err := s.adoptLease(sess.ctx, src, lease, mode); err != nil {
			src.owner = nil
			unregister()
			return nil, err
		}
		src.leaseExpiry = asked.Add(s.coord.TTL())
	}
	if conn.GetShardName() != "" {
		src.shard = conn.GetShardName()
	}
	src.mode = mode
	if mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY && src.dedup == nil {
		src.dedup = newDedupWindow(s.cfg.DedupEntries, s.cfg.DedupWindow)
	}
	sess.src, sess.mode = src, mode
	// Read now that sess owns the source and its predecessor's appends have
	// settled (the wait above lets flushes run): a commit that raised the
	// watermark before this read is seen here, and one after it finds sess
	// as the owner and notifies it. Read at the start, a commit in between
	// would be lost, and sess told an older watermark.
	s.mu.Lock()
	persisted, persistedEntry := src.persistedSeq, src.persistedEntry
	s.mu.Unlock()
	// Every batch before this stream was answered by an earlier one.
	sess.ackedSeq.Store(src.lastSeq)
	sess.ackedEntry.Store(src.lastEntry)
	if persisted > 0 {
		sess.notifyPersisted(persisted, persistedEntry)
	}
	return &lakehousev1.Connected{
		SourceId:          src.id,
		LastSequence:      src.lastSeq,
		PersistedSequence: persisted,
		LastEntrySequence: src.lastEntry,
		MaxMessageSize:    uint32(s.cfg.MaxMessageSize),
		ServerTimeMs:      time.Now().UnixMilli(),
		SequenceMode:      mode,
	}, nil
}

func (s *Server) detach(sess *session) {
	if sess.src != nil {
		sess.src.mu.Lock()
		if sess.src.owner == sess {
			sess.src.owner = nil
		}
		sess.src.mu.Unlock()
	}
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// handle processes one request. An error ends the stream.
func (sess *session) handle(req *lakehousev1.StreamRequest) error {
	switch k := req.GetKind().(type) {
	case *lakehousev1.StreamRequest_BinaryBatch:
		return sess.batch(k.BinaryBatch, sess.srv.decode)
	case *lakehousev1.StreamRequest_Batch:
		frame, err := encodeStructured(k.Batch, sess.src.id, sess.srv.decode.ValidateJSON)
		var tooLarge *frameTooLarge
		if errors.As(err, &tooLarge) {
			err = errors.New(sess.srv.tooLarge(tooLarge.size))
		}
		if err != nil {
			return sess.queue(ready(nackResp(&lakehousev1.Nack{
				SequenceNumber: k.Batch.GetSequenceNumber(),
				Reason:         lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT,
				ErrorMessage:   err.Error(),
				CorrelationId:  k.Batch.GetCorrelationId(),
				TimestampMs:    time.Now().UnixMilli(),
			})))
		}
		// Its JSON was checked while encoding it, and its checksum is right.
		opts := sess.srv.decode
		opts.ValidateJSON, opts.SkipChecksum = false, true
		return sess.batch(frame, opts)
	case *lakehousev1.StreamRequest_Heartbeat:
		return sess.sendOwn(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Pong{Pong: &lakehousev1.Pong{
			TimestampMs: k.Heartbeat.GetTimestampMs(), ServerTimeMs: time.Now().UnixMilli(),
		}}})
	case *lakehousev1.StreamRequest_Flush:
		// A barrier: it waits in the reply queue behind the batches
		// received before it, so it covers them and its status follows
		// their acks.
		reason := k.Flush.GetReason()
		sess.pendingFlushes++
		return sess.queue(reply{flush: &reason})
	case *lakehousev1.StreamRequest_Connect:
		return status.Error(codes.FailedPrecondition, "connect may only be the first message of a stream")
	default:
		return status.Error(codes.InvalidArgument, "empty stream request")
	}
}

// observe counts a batch's outcome.
func (s *Server) observe(r *lakehousev1.StreamResponse) {
	if a := r.GetAck(); a != nil {
		s.m.batches.WithLabelValues(protomap.AckStatusName(a.Status)).Inc()
		if d := a.GetDetails(); d != nil && a.Status != lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
			s.m.entries.Add(float64(d.EntriesAccepted))
		}
	} else if n := r.GetNack(); n != nil {
		s.m.batches.WithLabelValues("nack_" + protomap.NackReasonName(n.Reason)).Inc()
	}
}

func nackResp(n *lakehousev1.Nack) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Nack{Nack: n}}
}

func ackResp(a *lakehousev1.Ack) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Ack{Ack: a}}
}
