package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// conn is one legacy child's WebSocket. Its only long-lived goroutine is run,
// reading the socket; an upstream stream adds a receiver goroutine while it is
// open.
type conn struct {
	b      *Bridge
	ws     *websocket.Conn
	raw    net.Conn // the hijacked connection under ws (for Shutdown)
	remote string
	auth   string // the upgrade's Authorization header, passed upstream

	// Written by the reading goroutine only (before any upstream exists for
	// them); read by others under mu.
	source, shard                     string
	sourceFromHeader, shardFromHeader bool

	connectedAt time.Time // when the WebSocket was accepted; set before run

	mu         sync.Mutex
	up         *upstream       // nil when no stream is open
	inflight   []inflightBatch // batches sent on up, awaiting ack or nack
	lastActive time.Time       // last batch sent upstream or answered
	idleTimer  *time.Timer     // closes up after UpstreamIdleTimeout; created lazily
	// The child's own batch numbers, for GET /status: the server numbers a
	// legacy child's batches itself, so only the bridge knows these.
	lastReceived, lastAcked uint64
	// lastAckedEntry is the highest entry sequence acked to the child (the
	// acks' AckDetails.last_entry_sequence). The child keeps no batch once
	// acked, so a reconnect tells it to the server: an instance taking the
	// source over from a dead one waits while that one's log holds acked
	// entries it did not commit (docs/scale-out.md).
	lastAckedEntry uint64

	flushing atomic.Bool // a flush_request is being served
	closing  atomic.Bool // the WebSocket is being closed by the bridge

	// Keepalive (ping.go).
	pingTimer *time.Timer   // guarded by mu
	ended     atomic.Bool   // run has returned
	busy      atomic.Bool   // the reader is handling a message, not reading
	handled   atomic.Uint64 // messages handled, for pings that overlap one
}

// inflightBatch identifies a batch sent upstream, to answer it if the stream
// breaks and to complete an ack or nack that lacks its ids.
type inflightBatch struct {
	seq  uint64
	corr string
}

// run reads messages until the socket fails or the bridge closes.
func (c *conn) run() {
	log := c.b.log
	log.Debug("legacy child connected", "remote", c.remote, "source", c.source)
	defer func() {
		c.stopPing()
		c.dropUpstream()
		_ = c.ws.CloseNow()
		log.Debug("legacy child disconnected", "remote", c.remote, "source", c.source)
	}()
	for {
		// Without an idle timeout the read has no context to watch (Close
		// closes the socket instead), which keeps an idle connection smaller.
		ctx, cancel := context.Background(), context.CancelFunc(nil)
		if c.b.cfg.IdleTimeout > 0 {
			ctx, cancel = context.WithTimeout(c.b.ctx, c.b.cfg.IdleTimeout)
		}
		typ, r, err := c.ws.Reader(ctx)
		if err != nil {
			if cancel != nil {
				cancel()
			}
			if !c.closing.Load() && c.b.ctx.Err() == nil && websocket.CloseStatus(err) == -1 && !errors.Is(err, io.EOF) {
				log.Debug("websocket read failed", "remote", c.remote, "source", c.source, "err", err)
			}
			return
		}
		c.busy.Store(true)
		c.handled.Add(1)
		err = c.handle(typ, r)
		c.busy.Store(false)
		if cancel != nil {
			cancel()
		}
		if err != nil {
			log.Debug("websocket closed", "remote", c.remote, "source", c.source, "err", err)
			return
		}
	}
}

// handle reads and answers one message. An error ends the connection.
func (c *conn) handle(typ websocket.MessageType, r io.Reader) error {
	bp := c.b.getBuf()
	defer c.b.putBuf(bp)
	msg, tooBig, err := c.readMessage(bp, r)
	if err != nil {
		return err
	}
	if tooBig {
		seq, corr := peekIDs(msg)
		c.b.log.Warn("message too large, discarded", "remote", c.remote, "source", c.source, "limit", c.b.cfg.MaxMessageSize)
		return c.sendNack(seq, corr, codec.NackInvalidFormat, false, 0,
			fmt.Sprintf("message exceeds the %d-byte limit", c.b.cfg.MaxMessageSize))
	}
	if typ == websocket.MessageText && string(msg) == "ping" {
		return c.write(websocket.MessageText, []byte("pong"))
	}
	if typ == websocket.MessageBinary && codec.IsBinary(msg) {
		return c.handleBinary(msg)
	}
	return c.handleJSON(msg)
}

// readMessage reads a message into *bp, at most MaxMessageSize bytes. A larger
// message is read to its end and discarded; tooBig is then true and msg holds
// its first bytes. A binary cdc_batch whose header declares more than the
// limit is refused as soon as the header is in.
func (c *conn) readMessage(bp *[]byte, r io.Reader) (msg []byte, tooBig bool, err error) {
	limit := c.b.cfg.MaxMessageSize
	buf := (*bp)[:0]
	declared := false
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := cap(buf) - len(buf)
		if over := int64(len(buf)) + int64(room) - (limit + 1); over > 0 {
			room -= int(over)
		}
		n, rerr := r.Read(buf[len(buf) : len(buf)+room])
		buf = buf[:len(buf)+n]
		*bp = buf
		if !declared && len(buf) >= codec.BatchHeaderSize {
			declared = true
			if size, ok := declaredBatchSize(buf); ok && size > limit {
				tooBig = true
			}
		}
		if int64(len(buf)) > limit {
			tooBig = true
		}
		if tooBig {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, false, fmt.Errorf("discard oversized message: %w", err)
			}
			return buf, true, nil
		}
		if rerr == io.EOF {
			return buf, false, nil
		}
		if rerr != nil {
			return nil, false, fmt.Errorf("read message: %w", rerr)
		}
	}
}

// declaredBatchSize returns the frame size a cdc_batch header declares.
func declaredBatchSize(f []byte) (int64, bool) {
	h, err := codec.PeekBatchHeader(f)
	if err != nil {
		return 0, false
	}
	return h.DeclaredSize(), true
}

// peekIDs reads, as far as the bytes allow, the sequence number and the
// correlation id of a binary frame that may be invalid or cut short.
func peekIDs(f []byte) (seq uint64, corr []byte) {
	if !codec.IsBinary(f) {
		return 0, nil
	}
	h, _ := codec.PeekBatchHeader(f)
	return h.Sequence, h.CorrelationID
}

// handleBinary forwards a binary cdc_batch frame untouched.
func (c *conn) handleBinary(frame []byte) error {
	h, err := codec.ReadHeader(frame)
	if err != nil {
		seq, corr := peekIDs(frame)
		return c.sendNack(seq, corr, codec.NackInvalidFormat, false, 0, err.Error())
	}
	if h.Type != codec.TypeCDCBatch {
		seq, corr := peekIDs(frame)
		return c.sendNack(seq, corr, codec.NackInvalidFormat, false, 0,
			fmt.Sprintf("unexpected binary message type %s: only cdc_batch is accepted", h.Type))
	}
	bh, _ := codec.PeekBatchHeader(frame)
	return c.forward(frame, bh.Sequence, bh.CorrelationID, string(bh.SourceID))
}

// handleJSON answers a JSON text message.
func (c *conn) handleJSON(data []byte) error {
	m, err := codec.ParseJSONMessage(data)
	if err != nil {
		return c.sendNack(0, nil, codec.NackInvalidFormat, false, 0, err.Error())
	}
	switch m := m.(type) {
	case *codec.ConnectMessage:
		return c.handleConnect(m)
	case *codec.HeartbeatMessage:
		return c.writeJSON(codec.PongMessage{Type: codec.JSONPong, Timestamp: m.Timestamp, ServerTime: time.Now().UnixMilli()})
	case *codec.FlushRequestMessage:
		c.startFlush(m.Reason)
		return nil
	case *codec.CDCBatchMessage:
		corr := []byte(m.CorrelationID)
		b, err := m.ToBatch()
		if err != nil {
			return c.sendNack(m.SequenceNumber, corr, codec.NackInvalidFormat, false, 0, err.Error())
		}
		frame, err := codec.EncodeBatch(b)
		if err != nil {
			return c.sendNack(m.SequenceNumber, corr, codec.NackInvalidFormat, false, 0, err.Error())
		}
		return c.forward(frame, m.SequenceNumber, corr, m.SourceDoID)
	}
	return c.sendNack(0, nil, codec.NackInvalidFormat, false, 0, fmt.Sprintf("unexpected JSON message %T", m))
}

// handleConnect records the child's identity, opens the upstream stream and
// replies with a status.
func (c *conn) handleConnect(m *codec.ConnectMessage) error {
	if !c.sourceFromHeader && m.SourceDoID != "" {
		c.setIdentity(m.SourceDoID, c.shard)
	}
	if !c.shardFromHeader && m.SourceShardName != "" {
		c.setIdentity(c.source, m.SourceShardName)
	}
	if c.source == "" {
		return c.sendNack(0, nil, codec.NackInvalidFormat, false, 0, "connect without sourceDoId")
	}
	st := codec.StatusMessage{Type: codec.JSONStatus, Timestamp: time.Now().UnixMilli(), State: "error"}
	if _, err := c.ensureUpstream(); err != nil {
		c.b.upstreamFailed(c.source, err)
		if fatalUpstream(err) {
			c.closeWS(websocket.StatusPolicyViolation, truncateReason("upstream refused: "+err.Error()))
			return err
		}
		return c.writeJSON(st)
	}
	authz, _ := c.authFor(c.source) // the stream just opened with it
	ctx, cancel := context.WithTimeout(withAuth(c.b.ctx, authz), c.b.cfg.ConnectTimeout)
	ss, err := c.b.cachedStatus(ctx)
	cancel()
	if err != nil {
		lvl := slog.LevelWarn
		if fatalUpstream(err) { // e.g. a token without the status scope: expected, not news
			lvl = slog.LevelDebug
		}
		c.b.log.Log(c.b.ctx, lvl, "status for connect reply failed", "source", c.source, "err", err)
		st.State = "receiving"
	} else {
		st = statusMessage(ss)
	}
	return c.writeJSON(st)
}

// setIdentity changes source and shard; an open upstream stream bound to the
// old identity is closed (idle) so the next batch reconnects.
func (c *conn) setIdentity(source, shard string) {
	c.mu.Lock()
	changed := source != c.source || shard != c.shard
	c.source, c.shard = source, shard
	var old *upstream
	if changed && c.up != nil && len(c.inflight) == 0 {
		old, c.up = c.up, nil
	}
	c.mu.Unlock()
	if old != nil {
		old.closeGracefully()
	}
}

// forward sends a cdc_batch frame upstream. The frame may be reused when
// forward returns.
func (c *conn) forward(frame []byte, seq uint64, corr []byte, frameSrc string) error {
	if c.source == "" && frameSrc != "" {
		c.setIdentity(frameSrc, c.shard)
	}
	if c.source == "" {
		return c.sendNack(seq, corr, codec.NackInvalidFormat, false, 0, "no source id: send connect first")
	}
	for attempt := 0; ; attempt++ {
		up, err := c.ensureUpstream()
		if err != nil {
			c.b.upstreamFailed(c.source, err)
			if fatalUpstream(err) {
				_ = c.sendNack(seq, corr, codec.NackInternalError, false, 0, "upstream refused the stream: "+err.Error())
				c.closeWS(websocket.StatusPolicyViolation, truncateReason("upstream refused: "+err.Error()))
				return err
			}
			return c.sendNack(seq, corr, codec.NackInternalError, true, c.retryDelayMs(), "upstream unavailable: "+err.Error())
		}
		if limit := up.connected.GetMaxMessageSize(); limit > 0 && len(frame) > int(limit) {
			return c.sendNack(seq, corr, codec.NackInvalidFormat, false, 0,
				fmt.Sprintf("batch of %d bytes exceeds the server's %d-byte limit", len(frame), limit))
		}
		c.mu.Lock()
		if c.up != up { // broke or idled out between ensure and now
			c.mu.Unlock()
			if attempt < 2 {
				continue
			}
			return c.sendNack(seq, corr, codec.NackInternalError, true, c.retryDelayMs(), "upstream stream closed")
		}
		c.inflight = append(c.inflight, inflightBatch{seq: seq, corr: string(corr)})
		c.lastActive = time.Now()
		c.lastReceived = seq
		c.mu.Unlock()
		if err := up.send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
			// The receiver sees the stream's real error and nacks the batch.
			c.b.log.Debug("upstream send failed", "source", c.source, "err", err)
		}
		return nil
	}
}

func (c *conn) retryDelayMs() uint32 {
	return uint32(min(c.b.cfg.RetryDelay.Milliseconds(), 1<<31))
}

// startFlush runs one Flush RPC in the background and sends the child a status
// when it completes. Requests arriving while one runs are coalesced into it.
func (c *conn) startFlush(reason string) {
	if !c.flushing.CompareAndSwap(false, true) {
		return
	}
	source := c.source
	started := c.b.goAdd(func() {
		defer c.flushing.Store(false)
		authz, err := c.authFor(source)
		if err != nil {
			c.b.log.Debug("flush_request refused", "source", source, "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(withAuth(c.b.ctx, authz), c.b.cfg.RPCTimeout)
		defer cancel()
		res, err := c.b.client.Flush(ctx, &lakehousev1.FlushRequest{Reason: protomap.FlushReason(reason)})
		if err != nil {
			c.b.log.Warn("flush_request failed", "source", source, "err", err)
			return
		}
		c.b.log.Debug("flush_request done", "source", source, "success", res.GetResult().GetSuccess())
		sresp, err := c.b.client.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
		if err != nil {
			return
		}
		_ = c.writeJSON(statusMessage(sresp.GetStatus()))
	})
	if !started {
		c.flushing.Store(false)
	}
}

// write sends one WebSocket message, bounded by WriteTimeout. Errors close
// the socket (the reader then ends).
func (c *conn) write(typ websocket.MessageType, p []byte) error {
	ctx, cancel := context.WithTimeout(c.b.ctx, c.b.cfg.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, typ, p); err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	return nil
}

func (c *conn) writeJSON(v any) error {
	p, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	return c.write(websocket.MessageText, p)
}

func (c *conn) sendAck(seq uint64, corr []byte, status codec.AckStatus) error {
	var buf [64]byte
	f, err := codec.AppendAck(buf[:0], &codec.Ack{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, Status: status, CorrelationID: corr})
	if err != nil {
		return fmt.Errorf("encode ack: %w", err)
	}
	return c.write(websocket.MessageBinary, f)
}

func (c *conn) sendNack(seq uint64, corr []byte, reason codec.NackReason, retry bool, delayMs uint32, msg string) error {
	if len(msg) > 0xFFFF {
		msg = truncateUTF8(msg, 0xFFFF)
	}
	if len(corr) > 0xFFFF {
		corr = nil
	}
	var buf [128]byte
	f, err := codec.AppendNack(buf[:0], &codec.Nack{
		Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, Reason: reason,
		ShouldRetry: retry, RetryDelayMs: delayMs, Message: msg, CorrelationID: corr,
	})
	if err != nil {
		return fmt.Errorf("encode nack: %w", err)
	}
	return c.write(websocket.MessageBinary, f)
}

// closeWS closes the WebSocket with a close frame and waits (bounded) for the
// handshake.
func (c *conn) closeWS(code websocket.StatusCode, reason string) {
	c.closing.Store(true)
	_ = c.ws.Close(code, reason)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// truncateReason fits a close reason in a control frame (123 bytes).
func truncateReason(s string) string { return truncateUTF8(s, 120) }
