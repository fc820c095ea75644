package wsbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
	"github.com/dot-do/lakehouse-rpc/internal/rpcstatus"
)

// closeGrace is how long a gracefully closed stream may take to end before it
// is cancelled.
const closeGrace = 5 * time.Second

// upstream is one open CDCService stream of a connection.
type upstream struct {
	source    string
	stream    grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]
	cancel    context.CancelFunc
	connected *lakehousev1.Connected

	sendMu     sync.Mutex // serialises Send and CloseSend
	sendClosed bool
	grace      *time.Timer
}

var errSendClosed = errors.New("wsbridge: upstream stream closed for sending")

func (u *upstream) send(req *lakehousev1.StreamRequest) error {
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	if u.sendClosed {
		return errSendClosed
	}
	if err := u.stream.Send(req); err != nil {
		return fmt.Errorf("upstream send: %w", err)
	}
	return nil
}

// closeGracefully half-closes the stream, so the server ends it after what
// was sent, and cancels it if that takes longer than closeGrace.
func (u *upstream) closeGracefully() {
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	if u.sendClosed {
		return
	}
	u.sendClosed = true
	_ = u.stream.CloseSend()
	u.grace = time.AfterFunc(closeGrace, u.cancel)
}

// release cancels the stream and its grace timer; called by the receiver on
// its way out.
func (u *upstream) release() {
	u.cancel()
	u.sendMu.Lock()
	if u.grace != nil {
		u.grace.Stop()
	}
	u.sendClosed = true
	u.sendMu.Unlock()
}

// ensureUpstream returns the connection's open stream, opening one (connect
// and Connected) when there is none. Only the reading goroutine calls it.
func (c *conn) ensureUpstream() (*upstream, error) {
	c.mu.Lock()
	if up := c.up; up != nil {
		c.mu.Unlock()
		return up, nil
	}
	source, shard := c.source, c.shard
	c.mu.Unlock()

	up, err := c.openUpstream(source, shard)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.up = up
	c.lastActive = time.Now()
	c.armIdleLocked(c.b.cfg.UpstreamIdleTimeout)
	c.mu.Unlock()
	if !c.b.goAdd(func() { c.receive(up) }) {
		c.mu.Lock()
		if c.up == up {
			c.up = nil
		}
		c.mu.Unlock()
		up.cancel()
		return nil, errClosed
	}
	return up, nil
}

// openUpstream opens a stream and waits for Connected.
func (c *conn) openUpstream(source, shard string) (*upstream, error) {
	ctx, cancel := context.WithCancel(c.b.ctx)
	timer := time.AfterFunc(c.b.cfg.ConnectTimeout, cancel)
	fail := func(what string, err error) (*upstream, error) {
		timedOut := !timer.Stop()
		cancel()
		if timedOut && c.b.ctx.Err() == nil {
			return nil, fmt.Errorf("upstream %s for source %q: timed out after %v: %w", what, source, c.b.cfg.ConnectTimeout, err)
		}
		return nil, fmt.Errorf("upstream %s for source %q: %w", what, source, err)
	}
	authz, err := c.authFor(source)
	if err != nil {
		return fail("open", err)
	}
	// Redirects (redirect.go): the owner's instance is tried at once; a
	// target that fails sends the child back to the configured upstream.
	client, target := c.b.client, ""
	for hops := 0; ; hops++ {
		actx, acancel := context.WithCancel(ctx)
		st, connected, redirect, err := c.connectOn(actx, client, source, shard, authz)
		if err == nil && connected != nil {
			timer.Stop()
			if c.b.upstreamDown.Swap(false) {
				c.b.log.Info("upstream reachable again", "source", source)
			}
			c.b.log.Debug("upstream stream open", "source", source, "via", target, "last_entry_sequence", connected.GetLastEntrySequence())
			stop := func() { acancel(); cancel() }
			return &upstream{source: source, stream: st, cancel: stop, connected: connected}, nil
		}
		acancel()
		switch {
		case redirect != nil:
			next, rerr := c.b.followRedirect(redirect, hops)
			if rerr != nil {
				return fail("connect", rerr)
			}
			client, target = next, redirect.GetAddr()
		case target != "" && ctx.Err() == nil:
			c.b.log.Warn("redirect target failed; back to the configured upstream", "source", source, "addr", target, "error", err)
			client, target = c.b.client, ""
			hops = c.b.cfg.MaxRedirects // a redirect now is not followed again
		default:
			return fail("connect", err)
		}
	}
}

// connectOn opens a stream on client and sends the connect; it returns the
// stream with Connected, or the Redirect that answered instead, or an error.
func (c *conn) connectOn(ctx context.Context, client lakehousev1.CDCServiceClient, source, shard, authz string) (
	grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse], *lakehousev1.Connected, *lakehousev1.Redirect, error) {
	st, err := client.Stream(withAuth(ctx, authz))
	if err != nil {
		return nil, nil, nil, err
	}
	c.mu.Lock()
	lastEntry := c.lastAckedEntry
	c.mu.Unlock()
	err = st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId:             source,
		ShardName:            shard,
		ProtocolVersion:      uint32(codec.Version),
		LastAckEntrySequence: lastEntry,
		SequenceMode:         lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY,
		Capabilities: &lakehousev1.Capabilities{
			BinaryProtocol: true, Batching: true, MaxMessageSize: uint32(min(c.b.cfg.MaxMessageSize, 1<<31)),
		},
	}}})
	if err != nil && !errors.Is(err, io.EOF) { // io.EOF: the real error comes from Recv
		return nil, nil, nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, nil, nil, err
	}
	if r := resp.GetRedirect(); r != nil {
		return nil, nil, r, nil
	}
	connected := resp.GetConnected()
	if connected == nil {
		return nil, nil, nil, fmt.Errorf("expected Connected, got %T", resp.GetKind())
	}
	return st, connected, nil, nil
}

// receive turns the stream's responses into ack and nack frames until the
// stream ends.
func (c *conn) receive(up *upstream) {
	defer up.release()
	for {
		resp, err := up.stream.Recv()
		if err != nil {
			c.upstreamEnded(up, err)
			return
		}
		switch k := resp.GetKind().(type) {
		case *lakehousev1.StreamResponse_Ack:
			a := k.Ack
			seq, corr, ok := c.complete(up, a.GetSequenceNumber(), a.GetCorrelationId())
			if ok {
				c.noteAcked(seq, a.GetDetails().GetLastEntrySequence())
				_ = c.sendAck(seq, corr, protomap.AckStatus(a.GetStatus()))
			}
		case *lakehousev1.StreamResponse_Nack:
			n := k.Nack
			seq, corr, ok := c.complete(up, n.GetSequenceNumber(), n.GetCorrelationId())
			if ok {
				_ = c.sendNack(seq, corr, protomap.NackReason(n.GetReason()), n.GetShouldRetry(), n.GetRetryDelayMs(), n.GetErrorMessage())
			}
		case *lakehousev1.StreamResponse_Persisted:
			c.b.log.Debug("persisted watermark (not forwarded to legacy child)", "source", up.source,
				"sequence", k.Persisted.GetSequenceNumber(), "entry_sequence", k.Persisted.GetEntrySequence())
		default:
			c.b.log.Debug("upstream message ignored", "source", up.source, "kind", fmt.Sprintf("%T", k))
		}
	}
}

// noteAcked records the child's batch number of the latest ack and the
// highest entry sequence acked.
func (c *conn) noteAcked(seq, lastEntry uint64) {
	c.mu.Lock()
	c.lastAcked = seq
	c.lastAckedEntry = max(c.lastAckedEntry, lastEntry)
	c.mu.Unlock()
}

// complete removes the in-flight batch an ack or nack answers and returns
// the ids to put in the frame. The server echoes both ids; when it could not
// read them (seq 0, no correlation id) the oldest in-flight batch is the one
// answered, since a stream answers its batches in order. ok is false when up
// is no longer the connection's stream.
func (c *conn) complete(up *upstream, seq uint64, corr string) (uint64, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up != up {
		return 0, nil, false
	}
	c.lastActive = time.Now()
	idx := -1
	for i, b := range c.inflight {
		if b.seq == seq && b.corr == corr {
			idx = i
			break
		}
	}
	if idx < 0 && corr == "" {
		for i, b := range c.inflight {
			if seq == 0 || b.seq == seq {
				idx = i
				break
			}
		}
	}
	if idx < 0 {
		return seq, []byte(corr), true
	}
	b := c.inflight[idx]
	c.inflight = append(c.inflight[:idx], c.inflight[idx+1:]...)
	return b.seq, []byte(b.corr), true
}

// upstreamEnded handles the end of a stream: a stream the connection still
// uses broke, so its in-flight batches are nacked (retry) and the next batch
// reconnects; a fenced stream closes the WebSocket.
func (c *conn) upstreamEnded(up *upstream, err error) {
	c.mu.Lock()
	current := c.up == up
	var pending []inflightBatch
	if current {
		c.up = nil
		pending, c.inflight = c.inflight, nil
	}
	c.mu.Unlock()
	if !current {
		return // closed on purpose (idle, identity change, shutdown)
	}
	if c.b.ctx.Err() != nil {
		return
	}
	code := status.Code(err)
	if errors.Is(err, io.EOF) {
		code = codes.Unavailable
	}
	fenced := code == codes.Aborted
	c.b.log.Info("upstream stream ended", "source", up.source, "code", code.String(), "err", err, "in_flight", len(pending), "fenced", fenced)
	msg := "upstream stream broke: " + err.Error()
	if fenced {
		msg = "stream fenced: another connection took over this source"
	}
	// Another permanent code (a revoked token: Unauthenticated) ends the
	// connection too: reconnecting with the same credentials cannot help.
	refused := !fenced && fatalUpstream(err)
	if refused {
		msg = "upstream refused the stream: " + status.Convert(err).Message()
	}
	for _, p := range pending {
		if c.sendNack(p.seq, []byte(p.corr), codec.NackInternalError, true, c.retryDelayMs(), msg) != nil {
			break
		}
	}
	switch {
	case fenced:
		c.closeWS(websocket.StatusPolicyViolation, "fenced: another connection took over this source")
	case refused:
		c.closeWS(websocket.StatusPolicyViolation, truncateReason("upstream refused: "+status.Convert(err).Message()))
	}
}

// armIdleLocked (re)starts the idle check of the upstream stream.
func (c *conn) armIdleLocked(d time.Duration) {
	if c.b.cfg.UpstreamIdleTimeout < 0 {
		return
	}
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(d, c.idleCheck)
		return
	}
	c.idleTimer.Reset(d)
}

// idleCheck closes the upstream stream when nothing was in flight or sent for
// UpstreamIdleTimeout.
func (c *conn) idleCheck() {
	idle := c.b.cfg.UpstreamIdleTimeout
	c.mu.Lock()
	up := c.up
	if up == nil {
		c.mu.Unlock()
		return
	}
	if since := time.Since(c.lastActive); len(c.inflight) > 0 || since < idle {
		c.armIdleLocked(max(idle-since, idle/4, time.Millisecond))
		c.mu.Unlock()
		return
	}
	c.up = nil
	c.inflight = nil
	c.idleTimer = nil // fired; a new stream makes a new one
	c.mu.Unlock()
	c.b.log.Debug("closing idle upstream stream", "source", up.source)
	up.closeGracefully()
}

// dropUpstream closes the connection's stream when the WebSocket ends.
func (c *conn) dropUpstream() {
	c.mu.Lock()
	up := c.up
	c.up = nil
	c.inflight = nil
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	if up != nil {
		up.closeGracefully()
	}
}

// fatalUpstream reports whether the server refused the stream for good (a
// permanent status code, the list shared with the Go client): the WebSocket
// is closed rather than told to retry.
func fatalUpstream(err error) bool { return rpcstatus.Permanent(err) }

// upstreamFailed logs a failure to open a stream: at warn level the first
// time in an outage, at debug level after that (an outage would otherwise log
// once per batch of every child).
func (b *Bridge) upstreamFailed(source string, err error) {
	if b.upstreamDown.CompareAndSwap(false, true) {
		b.log.Warn("upstream unavailable; batches are nacked internal_error with retry until it is back", "source", source, "err", err)
		return
	}
	b.log.Debug("upstream unavailable", "source", source, "err", err)
}
