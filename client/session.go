package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/rpcstatus"
)

type cdcStream = grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]

// errStopped ends a session on Close.
var errStopped = errors.New("client: stopped")

// permanent reports whether a stream error will not go away by reconnecting:
// fencing, or a permanent gRPC status (the list shared with the WebSocket
// bridge, internal/rpcstatus).
func permanent(err error) bool {
	return errors.Is(err, ErrFenced) || rpcstatus.Permanent(err)
}

// backoff returns base x multiplier^(n-1), at most the retry cap.
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

// sleep waits d on the client's clock; false when the client stops (Close
// does not wait for a reconnect delay).
func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-c.stopCh:
		return false
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
		if errors.Is(err, errRedirected) || errors.Is(err, errRedirectFailed) {
			// Connect again at once: to the owner, or back to the original
			// address (redirect.go bounds how often in a row).
			c.log.Debug("client: reconnecting at once", "err", err)
			continue
		}
		failures++
		c.log.Warn("client: stream ended", "err", err, "attempt", failures)
		if permanent(err) || failures > c.cfg.maxReconnectAttempts {
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
	rpc, target := c.streamRPC()
	stream, err := rpc.Stream(sctx)
	if err != nil {
		c.breaker.Failure()
		return false, c.redirectFailed(target, fmt.Errorf("client: open stream: %w", err))
	}
	c.mu.Lock()
	lastAcked, resendFrom := c.q.lastAcked, c.q.resendFrom()
	c.mu.Unlock()
	connect := &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId:           c.sourceID,
		ShardName:          c.cfg.shardName,
		LastAckSequence:    lastAcked,
		ResendFromSequence: resendFrom,
		ProtocolVersion:    1,
		SequenceMode:       lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH,
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
		return false, c.redirectFailed(target, fmt.Errorf("client: send connect: %w", streamErr(rerr, err)))
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
		return false, c.redirectFailed(target, fmt.Errorf("client: waiting for connected: %w", streamErr(err, nil)))
	}
	if r := resp.GetRedirect(); r != nil {
		// The server answered: not a failure of the service.
		c.breaker.Success()
		return false, c.followRedirect(r)
	}
	conn := resp.GetConnected()
	if conn == nil {
		c.breaker.Failure()
		return false, c.redirectFailed(target, fmt.Errorf("client: expected connected, got %T", resp.GetKind()))
	}
	c.redirStreak = 0
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

// onConnected resumes from the server's position: Connected.last_sequence
// says which pending batches the server has; the rest is resent.
func (c *Client) onConnected(conn *lakehousev1.Connected) {
	now := c.clock.Now()
	c.mu.Lock()
	if c.st.batchesSent > 0 || c.state == StateReconnecting {
		c.st.reconnects++
	}
	c.log.Info("client: connected", "last_sequence", conn.GetLastSequence(), "persisted_sequence", conn.GetPersistedSequence())
	if conn.GetPersistedSequence() > c.q.persisted {
		c.persistedLocked(conn.GetPersistedSequence(), 0, now, false)
	}
	c.resyncLocked(conn.GetLastSequence(), now)
	// Give up, now that the server's position is known, on batches that
	// timed out too often (the server does not have them: resyncLocked
	// accepted those it has).
	for _, b := range slices.Clone(c.q.all()) { // giving up changes the queue
		if b.state == stQueued && b.failures > c.cfg.maxRetries {
			c.giveUpLocked(b, b.lastReason, fmt.Errorf("%w after %d failures", ErrAckTimeout, b.failures), true)
		}
	}
	c.setStateLocked(StateConnected, nil)
	c.mu.Unlock()
	c.flushEvents()
	c.wakeWriter()
}

// resyncLocked aligns the queue with the server's last accepted batch
// number (see queue.resync) and reports the batches the server already has
// as DUPLICATE acks.
func (c *Client) resyncLocked(last uint64, now time.Time) {
	next := c.q.nextSeq
	r := c.q.resync(last)
	for _, b := range r.dups {
		c.acceptLocked(b, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, nil, now, false)
	}
	if r.lostAcked > 0 {
		c.log.Warn("client: server lost acknowledged batches; resending", "batches", r.lostAcked, "server_last", last)
	}
	if r.behind {
		c.log.Warn("client: server is behind the batches it acknowledged", "server_last", last, "next", next)
	}
	if r.renumbered {
		c.log.Warn("client: server lacks batches; renumbering pending batches", "server_last", last)
	}
	if r.lostTo != 0 {
		err := &LostError{FromSeq: r.lostFrom, ToSeq: r.lostTo}
		c.st.batchesLost += r.lostTo - r.lostFrom + 1
		c.errs = append(c.errs, err)
		c.log.Error("client: the server lost acknowledged batches", "from", r.lostFrom, "to", r.lostTo, "server_last", last)
		if f := c.cfg.onError; f != nil {
			c.emit(func() { f(err) })
		}
	}
	c.broadcastLocked()
}

// endSession requeues what was in flight.
func (c *Client) endSession() {
	c.mu.Lock()
	c.q.requeueSent()
	c.sessionErr = nil
	c.mu.Unlock()
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
