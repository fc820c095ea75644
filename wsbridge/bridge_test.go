package wsbridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

func TestJSONMessages(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)

	t.Run("ping before connect does not touch upstream", func(t *testing.T) {
		pingPong(t, c)
		if fake.connectCount() != 0 {
			t.Fatalf("%d upstream connects", fake.connectCount())
		}
	})
	t.Run("connect", func(t *testing.T) {
		st := connect(t, c, "child-1", "shard-9")
		if st.State != "receiving" || st.Buffer.Utilization != 0.25 || st.Buffer.TotalSizeBytes != 300 || st.ConnectedChildren != 1 || st.NextFlushTime != 1700000030000 {
			t.Fatalf("status %+v", st)
		}
		cr := fake.lastConnect()
		if cr.GetSourceId() != "child-1" || cr.GetShardName() != "shard-9" || cr.GetSequenceMode() != lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
			t.Fatalf("upstream connect %v", cr)
		}
	})
	t.Run("heartbeat", func(t *testing.T) {
		sendJSON(t, c, codec.HeartbeatMessage{Type: codec.JSONHeartbeat, Timestamp: 1234567, SourceDoID: "child-1"})
		raw := recvText(t, c)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		now := float64(time.Now().UnixMilli())
		if m["type"] != "pong" || m["timestamp"] != float64(1234567) || len(m) != 3 {
			t.Fatalf("pong %s", raw)
		}
		if st, ok := m["serverTime"].(float64); !ok || st < now-10000 || st > now+1000 {
			t.Fatalf("pong serverTime %s", raw)
		}
	})
	t.Run("flush_request", func(t *testing.T) {
		sendJSON(t, c, codec.FlushRequestMessage{Type: codec.JSONFlushRequest, Timestamp: 1, SourceDoID: "child-1", Reason: "manual"})
		var st codec.StatusMessage
		if err := json.Unmarshal(recvText(t, c), &st); err != nil || st.Type != "status" {
			t.Fatalf("status after flush: %+v %v", st, err)
		}
		fake.mu.Lock()
		n := fake.flushes
		fake.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d flushes", n)
		}
	})
	t.Run("ping binary frame is JSON", func(t *testing.T) {
		// A binary frame without the magic is JSON text.
		send(t, c, websocket.MessageBinary, []byte(`{"type":"heartbeat","timestamp":5,"sourceDoId":"child-1","lastAckSequence":0,"pendingEntries":0}`))
		var p codec.PongMessage
		if err := json.Unmarshal(recvText(t, c), &p); err != nil || p.Type != "pong" || p.Timestamp != 5 {
			t.Fatalf("pong %+v %v", p, err)
		}
	})
	if got := fake.connectCount(); got != 1 {
		t.Fatalf("%d upstream connects, want 1", got)
	}
}

func TestUpgradeHeadersIdentity(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, http.Header{"X-Client-ID": {"hdr-src"}, "X-Shard-Name": {"hdr-shard"}})
	connect(t, c, "json-src", "json-shard")
	if cr := fake.lastConnect(); cr.GetSourceId() != "hdr-src" || cr.GetShardName() != "hdr-shard" {
		t.Fatalf("upstream connect %v", cr)
	}
	// A batch without a prior connect takes the source from the header too.
	c2 := env.dial(t, http.Header{"X-Client-ID": {"hdr-2"}})
	send(t, c2, websocket.MessageBinary, encode(t, testBatch("frame-src", "k", 1, 1, 1)))
	recvAck(t, c2)
	if cr := fake.lastConnect(); cr.GetSourceId() != "hdr-2" {
		t.Fatalf("upstream connect %v", cr)
	}
}

func TestBatchWithoutConnect(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	send(t, c, websocket.MessageBinary, encode(t, testBatch("from-frame", "k1", 3, 1, 2)))
	if a, _ := recvAck(t, c); a.Sequence != 3 || string(a.CorrelationID) != "k1" {
		t.Fatalf("ack %+v", a)
	}
	if cr := fake.lastConnect(); cr.GetSourceId() != "from-frame" {
		t.Fatalf("upstream connect %v", cr)
	}
	// No source anywhere: refused.
	c2 := env.dial(t, nil)
	send(t, c2, websocket.MessageBinary, encode(t, testBatch("", "k2", 4, 1, 1)))
	if n, _ := recvNack(t, c2); n.Reason != codec.NackInvalidFormat || string(n.CorrelationID) != "k2" {
		t.Fatalf("nack %+v", n)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "http-src", "")

	get := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, env.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	cases := []struct {
		method, path string
		code         int
		check        func(t *testing.T, body string)
	}{
		{"GET", "/health", 200, func(t *testing.T, body string) {
			if body != "OK" {
				t.Fatalf("body %q", body)
			}
		}},
		{"GET", "/status", 200, func(t *testing.T, body string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"state", "buffer", "connectedChildren", "children", "hasFallbackData"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("status lacks %q: %s", k, body)
				}
			}
			var s StatusJSON
			_ = json.Unmarshal([]byte(body), &s)
			if s.State != "receiving" || s.ConnectedChildren != 1 || len(s.Children) != 1 || s.Children[0].SourceDoID != "http-src" ||
				!s.Children[0].Connected || !s.HasFallbackData || s.BridgeConnections != 1 || s.Buffer.BatchCount != 0 {
				t.Fatalf("status %s", body)
			}
		}},
		{"POST", "/flush", 200, func(t *testing.T, body string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"success", "batchesFlushed", "entriesFlushed", "bytesWritten", "paths", "durationMs", "usedFallback"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("flush result lacks %q: %s", k, body)
				}
			}
			if m["success"] != true || m["bytesWritten"] != float64(1234) || m["paths"].([]any)[0] != "cdc/users/data/00001.parquet" {
				t.Fatalf("flush %s", body)
			}
			if _, ok := m["error"]; ok {
				t.Fatalf("error set on success: %s", body)
			}
		}},
		{"GET", "/flush", 405, nil},
		{"POST", "/status", 405, nil},
		{"GET", "/nope", 404, nil},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, body := get(tc.method, tc.path)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s", tc.method, tc.path, code, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
}

func TestHTTPUpstreamDown(t *testing.T) {
	fake := newFakeServer()
	cc := startFake(t, fake)
	env := newEnv(t, cc, func(c *Config) { c.RPCTimeout = 2 * time.Second; c.ConnectTimeout = time.Second })
	_ = cc.Close()
	resp, err := http.Post(env.srv.URL+"/flush", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r FlushResultJSON
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway || r.Success || r.Error == "" || r.Paths == nil {
		t.Fatalf("%d %+v", resp.StatusCode, r)
	}
	// A batch while the upstream is down: nack internal_error with retry.
	c := env.dial(t, nil)
	send(t, c, websocket.MessageBinary, encode(t, testBatch("s", "k", 1, 1, 1)))
	n, _ := recvNack(t, c)
	if n.Reason != codec.NackInternalError || !n.ShouldRetry || n.RetryDelayMs != 1000 || string(n.CorrelationID) != "k" {
		t.Fatalf("nack %+v", n)
	}
	pingPong(t, c)
}

// TestUpstreamBreak: when the stream breaks, in-flight batches are nacked
// internal_error with retry, and the next batch reconnects.
func TestUpstreamBreak(t *testing.T) {
	fake := newFakeServer()
	var broke atomic.Bool
	fake.respond = func(src string, frame []byte, b *codec.Batch) (*lakehousev1.StreamResponse, bool, error) {
		if b != nil && b.Sequence == 2 && broke.CompareAndSwap(false, true) {
			return nil, false, status.Error(codes.Unavailable, "simulated crash")
		}
		return nil, false, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "brk", "")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("brk", "b1", 1, 1, 1)))
	recvAck(t, c)
	send(t, c, websocket.MessageBinary, encode(t, testBatch("brk", "b2", 2, 2, 1)))
	n, _ := recvNack(t, c)
	if n.Reason != codec.NackInternalError || !n.ShouldRetry || n.Sequence != 2 || string(n.CorrelationID) != "b2" {
		t.Fatalf("nack %+v", n)
	}
	// The child resends under a new number: a new stream carries it.
	send(t, c, websocket.MessageBinary, encode(t, testBatch("brk", "b3", 3, 2, 1)))
	if a, _ := recvAck(t, c); a.Sequence != 3 || string(a.CorrelationID) != "b3" {
		t.Fatalf("ack %+v", a)
	}
	if got := fake.connectCount(); got != 2 {
		t.Fatalf("%d upstream connects, want 2", got)
	}
}

// TestReconnectReportsAckedEntries: the child keeps no batch once acked,
// so when the upstream stream breaks the bridge's next connect reports the
// highest entry sequence acked on it (ConnectRequest.last_ack_entry_sequence):
// an instance taking the source over from a dead one must not lose them
// (docs/scale-out.md).
func TestReconnectReportsAckedEntries(t *testing.T) {
	fake := newFakeServer()
	var broke atomic.Bool
	fake.respond = func(src string, frame []byte, b *codec.Batch) (*lakehousev1.StreamResponse, bool, error) {
		switch {
		case b == nil:
			return nil, false, nil
		case b.Sequence == 2 && broke.CompareAndSwap(false, true):
			return nil, false, status.Error(codes.Unavailable, "simulated crash")
		}
		r := ackResp(b.Sequence, string(b.CorrelationID), lakehousev1.AckStatus_ACK_STATUS_OK)
		r.GetAck().Details = &lakehousev1.AckDetails{LastEntrySequence: b.Entries[len(b.Entries)-1].Sequence}
		return r, true, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "acked", "")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("acked", "b1", 1, 1, 5)))
	recvAck(t, c)
	if got := fake.lastConnect().GetLastAckEntrySequence(); got != 0 {
		t.Fatalf("first connect: last_ack_entry_sequence %d, want 0", got)
	}
	send(t, c, websocket.MessageBinary, encode(t, testBatch("acked", "b2", 2, 6, 5)))
	recvNack(t, c)
	send(t, c, websocket.MessageBinary, encode(t, testBatch("acked", "b3", 3, 6, 5)))
	recvAck(t, c)
	if got := fake.lastConnect().GetLastAckEntrySequence(); got != 5 {
		t.Fatalf("reconnect: last_ack_entry_sequence %d, want 5 (entries 1..5 were acked)", got)
	}
}

// TestFencedClosesWebSocket: a second connection for the same source takes
// over; the first one's WebSocket is closed.
func TestFencedClosesWebSocket(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c1 := env.dial(t, nil)
	connect(t, c1, "same", "")
	c2 := env.dial(t, nil)
	connect(t, c2, "same", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c1.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("first connection: %v, want close 1008", err)
	}
	send(t, c2, websocket.MessageBinary, encode(t, testBatch("same", "k", 1, 1, 1)))
	recvAck(t, c2)
}

// TestUpstreamIdleClose: the upstream stream closes after the idle timeout
// and reopens on the next batch; heartbeats are answered without it.
func TestUpstreamIdleClose(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), func(c *Config) { c.UpstreamIdleTimeout = 100 * time.Millisecond })
	c := env.dial(t, nil)
	connect(t, c, "idle", "")
	eventually(t, 5*time.Second, "idle upstream close", func() bool { return fake.open() == 0 })
	fake.mu.Lock()
	endErr := fake.streamEnds[len(fake.streamEnds)-1]
	fake.mu.Unlock()
	if endErr != nil {
		t.Fatalf("idle stream ended with %v, want a clean half-close", endErr)
	}
	sendJSON(t, c, codec.HeartbeatMessage{Type: codec.JSONHeartbeat, Timestamp: 9})
	recvText(t, c)
	if fake.open() != 0 || fake.connectCount() != 1 {
		t.Fatal("heartbeat touched upstream")
	}
	send(t, c, websocket.MessageBinary, encode(t, testBatch("idle", "k", 1, 1, 1)))
	recvAck(t, c)
	if fake.connectCount() != 2 {
		t.Fatalf("%d connects", fake.connectCount())
	}
}

// TestIdleTimeoutClosesSocket: Config.IdleTimeout closes a silent WebSocket.
func TestIdleTimeoutClosesSocket(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), func(c *Config) { c.IdleTimeout = 150 * time.Millisecond })
	c := env.dial(t, nil)
	pingPong(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read: %v, want the socket closed", err)
	}
	eventually(t, 5*time.Second, "connection removed", func() bool { return env.bridge.Connections() == 0 })
}

// TestShutdown closes every connection with going-away and refuses new ones.
func TestShutdown(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	var conns []*websocket.Conn
	for i := range 5 {
		c := env.dial(t, nil)
		connect(t, c, "sd-"+itoa(uint64(i)), "")
		conns = append(conns, c)
	}
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			_, _, err := c.Read(context.Background())
			errs <- err
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.bridge.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range conns {
		if err := <-errs; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("read after shutdown: %v", err)
		}
	}
	if env.bridge.Connections() != 0 {
		t.Fatalf("%d connections left", env.bridge.Connections())
	}
	_, resp, err := websocket.Dial(ctx, env.wsURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v", err)
	}
	eventually(t, 5*time.Second, "upstream streams closed", func() bool { return fake.open() == 0 })
}

// TestShutdownWithChildNotReading: a child that does not read never
// answers the close frame; the coder/websocket library then waits for it
// (seconds per connection) and CloseNow cannot cut that wait. Shutdown still
// returns soon after its deadline, by closing the connection under the
// WebSocket. Before, it waited for the library's timeouts whatever ctx said.
func TestShutdownWithChildNotReading(t *testing.T) {
	env := newEnv(t, startFake(t, newFakeServer()), nil)
	c := env.dial(t, nil)
	connect(t, c, "deaf", "")
	// c is not read from now on.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := env.bridge.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Shutdown (deadline 300 ms) took %v with a child that does not read", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want its deadline exceeded", err)
	}
	if n := env.bridge.Connections(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

func TestMaxConnections(t *testing.T) {
	env := newEnv(t, startFake(t, newFakeServer()), func(c *Config) { c.MaxConnections = 1 })
	c := env.dial(t, nil)
	pingPong(t, c)
	_, resp, err := websocket.Dial(ctx5(t), env.wsURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second dial: %v", err)
	}
	if !strings.Contains(err.Error(), "503") {
		t.Logf("dial error: %v", err)
	}
}

func TestUpstreamNackAndAckMapping(t *testing.T) {
	fake := newFakeServer()
	statuses := []lakehousev1.AckStatus{
		lakehousev1.AckStatus_ACK_STATUS_OK, lakehousev1.AckStatus_ACK_STATUS_BUFFERED, lakehousev1.AckStatus_ACK_STATUS_PERSISTED,
		lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, lakehousev1.AckStatus_ACK_STATUS_FALLBACK, lakehousev1.AckStatus_ACK_STATUS_UNSPECIFIED,
	}
	want := []codec.AckStatus{codec.AckOK, codec.AckBuffered, codec.AckPersisted, codec.AckDuplicate, codec.AckFallback, codec.AckOK}
	fake.respond = func(src string, frame []byte, b *codec.Batch) (*lakehousev1.StreamResponse, bool, error) {
		i := b.Sequence - 1
		if int(i) < len(statuses) {
			return ackResp(b.Sequence, string(b.CorrelationID), statuses[i]), true, nil
		}
		// Nack without ids: the bridge fills them from the in-flight batch.
		r := nackResp(0, "", lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, "full")
		r.GetNack().ShouldRetry, r.GetNack().RetryDelayMs = true, 5000
		return r, true, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "map", "")
	for i := range statuses {
		send(t, c, websocket.MessageBinary, encode(t, testBatch("map", "c"+itoa(uint64(i)), uint64(i+1), uint64(i+1), 1)))
		a, _ := recvAck(t, c)
		if a.Status != want[i] || a.Sequence != uint64(i+1) {
			t.Fatalf("%v -> %+v", statuses[i], a)
		}
	}
	send(t, c, websocket.MessageBinary, encode(t, testBatch("map", "cn", 99, 99, 1)))
	n, _ := recvNack(t, c)
	if n.Reason != codec.NackBufferFull || !n.ShouldRetry || n.RetryDelayMs != 5000 || n.Sequence != 99 || string(n.CorrelationID) != "cn" || n.Message != "full" {
		t.Fatalf("nack %+v", n)
	}
}

// TestLargeBatch forwards a batch of about 12 MiB (under the 16 MiB limit).
func TestLargeBatch(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "big", "")
	frame := encode(t, largeBatch("big", 12<<20))
	send(t, c, websocket.MessageBinary, frame)
	if a, _ := recvAck(t, c); string(a.CorrelationID) != "big-1" {
		t.Fatalf("ack %+v", a)
	}
	if got := fake.lastFrame(); len(got) != len(frame) {
		t.Fatalf("upstream got %d bytes, want %d", len(got), len(frame))
	}
}

// largeBatch returns a batch of about size bytes in 64 KiB entries.
func largeBatch(source string, size int) *codec.Batch {
	b := testBatch(source, source+"-1", 1, 1, size/(64<<10))
	payload := []byte(`{"blob":"` + strings.Repeat("x", 64<<10-12) + `"}`)
	for i := range b.Entries {
		b.Entries[i].After = payload
	}
	return b
}

// TestServerMessageLimit: a batch over the max_message_size the server
// announced is refused by the bridge without breaking the stream.
func TestServerMessageLimit(t *testing.T) {
	fake := newFakeServer()
	fake.maxMsg = 1024
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "lim", "")
	send(t, c, websocket.MessageBinary, encode(t, largeBatch("lim", 128<<10)))
	n, _ := recvNack(t, c)
	if n.Reason != codec.NackInvalidFormat || n.ShouldRetry || string(n.CorrelationID) != "lim-1" || !strings.Contains(n.Message, "1024-byte limit") {
		t.Fatalf("nack %+v", n)
	}
	send(t, c, websocket.MessageBinary, encode(t, testBatch("lim", "small", 2, 1, 1)))
	recvAck(t, c)
	if fake.connectCount() != 1 || fake.frameCount() != 1 {
		t.Fatalf("connects %d frames %d", fake.connectCount(), fake.frameCount())
	}
}

// TestEarlyFrameAfterHandshake: a client that sends its first frame in the
// same packet as the upgrade request is served (the bytes net/http already
// buffered survive the hijack with small buffers).
func TestEarlyFrameAfterHandshake(t *testing.T) {
	env := newEnv(t, startFake(t, newFakeServer()), nil)
	nc, err := net.Dial("tcp", strings.TrimPrefix(env.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /cdc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | 4, mask[0], mask[1], mask[2], mask[3]}
	for i, ch := range []byte("ping") {
		frame = append(frame, ch^mask[i%4])
	}
	if _, err := nc.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "\x81\x04pong" {
		t.Fatalf("reply frame %q, want text pong", got)
	}
}

// BenchmarkBridgeW1 pushes W1 batches (1,000 entries, binary) through the
// bridge to a fake server that acks without decoding, over one legacy
// connection whose writer does not wait for acks, and reports the throughput
// of frame bytes (client, bridge and fake share the process).
func BenchmarkBridgeW1(b *testing.B) {
	fake := newFakeServer()
	fake.respond = func(src string, frame []byte, bt *codec.Batch) (*lakehousev1.StreamResponse, bool, error) {
		return ackResp(bt.Sequence, string(bt.CorrelationID), lakehousev1.AckStatus_ACK_STATUS_OK), true, nil
	}
	env := newEnv(b, startFake(b, fake), nil)
	c := env.dial(b, nil)
	connect(b, c, "w1", "")
	const distinct = 16
	frames := make([][]byte, distinct)
	for i := range frames {
		bt := workload.Batch("w1", uint64(i+1))
		bt.CorrelationID = []byte("w1-" + itoa(uint64(i)))
		frames[i] = encode(b, bt)
	}
	b.SetBytes(int64(len(frames[0])))
	b.ResetTimer()
	acked := make(chan error, 1)
	go func() {
		for range b.N {
			if _, _, err := c.Read(context.Background()); err != nil {
				acked <- err
				return
			}
		}
		acked <- nil
	}()
	ctx := context.Background()
	for i := range b.N {
		if err := c.Write(ctx, websocket.MessageBinary, frames[i%distinct]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-acked; err != nil {
		b.Fatal(err)
	}
}

// TestAuthorizationPassthrough: the upgrade's Authorization header reaches
// the server as gRPC metadata on the stream and on flush_request's Flush, and
// /flush passes its own.
func TestAuthorizationPassthrough(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, http.Header{"Authorization": {"Bearer child-token"}})
	connect(t, c, "auth-src", "")
	sendJSON(t, c, codec.FlushRequestMessage{Type: codec.JSONFlushRequest, Timestamp: 1, SourceDoID: "auth-src", Reason: "manual"})
	recvText(t, c)
	req, _ := http.NewRequest(http.MethodPost, env.srv.URL+"/flush", nil)
	req.Header.Set("Authorization", "Bearer operator")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := strings.Join(fake.authSeen(), "|")
	if got != "Bearer child-token|Bearer child-token|Bearer operator" {
		t.Fatalf("authorization seen upstream: %q", got)
	}
}
