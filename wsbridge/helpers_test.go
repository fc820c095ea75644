package wsbridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/codec"
)

func TestMain(m *testing.M) {
	if os.Getenv(idleClientEnv) != "" {
		os.Exit(idleClientMain())
	}
	goleak.VerifyTestMain(m)
}

// testEnv is a bridge in front of an upstream, served on a loopback HTTP
// listener.
type testEnv struct {
	bridge *Bridge
	srv    *httptest.Server
	wsURL  string
}

// newEnv starts a bridge on upstream; tweak adjusts its Config.
func newEnv(tb testing.TB, upstream grpc.ClientConnInterface, tweak func(*Config)) *testEnv {
	tb.Helper()
	cfg := Config{Upstream: upstream, Logger: testLogger(tb)}
	if tweak != nil {
		tweak(&cfg)
	}
	b := New(cfg)
	srv := httptest.NewServer(b.Handler())
	tb.Cleanup(func() {
		_ = b.Close()
		srv.Close()
	})
	return &testEnv{bridge: b, srv: srv, wsURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/cdc"}
}

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("WSBRIDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// dial opens a WebSocket to the bridge; header may be nil.
func (e *testEnv) dial(tb testing.TB, header http.Header) *websocket.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		tb.Fatalf("dial %s: %v", e.wsURL, err)
	}
	c.SetReadLimit(1 << 20)
	tb.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func ctx5(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func send(tb testing.TB, c *websocket.Conn, typ websocket.MessageType, p []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, p); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

func sendJSON(tb testing.TB, c *websocket.Conn, v any) {
	tb.Helper()
	p, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	send(tb, c, websocket.MessageText, p)
}

func recv(tb testing.TB, c *websocket.Conn) (websocket.MessageType, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, p, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return typ, p
}

func recvAck(tb testing.TB, c *websocket.Conn) (*codec.Ack, []byte) {
	tb.Helper()
	typ, p := recv(tb, c)
	if typ != websocket.MessageBinary {
		tb.Fatalf("expected a binary ack, got text %q", p)
	}
	a, err := codec.DecodeAck(p)
	if err != nil {
		if n, nerr := codec.DecodeNack(p); nerr == nil {
			tb.Fatalf("expected an ack, got nack %s %q (seq %d corr %q)", n.Reason, n.Message, n.Sequence, n.CorrelationID)
		}
		tb.Fatalf("decode ack %x: %v", p, err)
	}
	return a, p
}

func recvNack(tb testing.TB, c *websocket.Conn) (*codec.Nack, []byte) {
	tb.Helper()
	typ, p := recv(tb, c)
	if typ != websocket.MessageBinary {
		tb.Fatalf("expected a binary nack, got text %q", p)
	}
	n, err := codec.DecodeNack(p)
	if err != nil {
		tb.Fatalf("decode nack %x: %v", p, err)
	}
	return n, p
}

func recvText(tb testing.TB, c *websocket.Conn) []byte {
	tb.Helper()
	typ, p := recv(tb, c)
	if typ != websocket.MessageText {
		tb.Fatalf("expected text, got binary %x", p)
	}
	return p
}

// connectMsg is a legacy JSON connect.
func connectMsg(source, shard string) codec.ConnectMessage {
	return codec.ConnectMessage{
		Type: codec.JSONConnect, Timestamp: time.Now().UnixMilli(), SourceDoID: source, SourceShardName: shard,
		ProtocolVersion: 1, Capabilities: codec.Capabilities{BinaryProtocol: true, Batching: true, MaxBatchSize: 1000, MaxMessageSize: 4 << 20},
	}
}

// connect sends a JSON connect and reads the status reply.
func connect(tb testing.TB, c *websocket.Conn, source, shard string) codec.StatusMessage {
	tb.Helper()
	sendJSON(tb, c, connectMsg(source, shard))
	var st codec.StatusMessage
	if err := json.Unmarshal(recvText(tb, c), &st); err != nil {
		tb.Fatal(err)
	}
	if st.Type != codec.JSONStatus {
		tb.Fatalf("connect reply type %q, want status", st.Type)
	}
	return st
}

// pingPong checks that the connection still answers the text ping.
func pingPong(tb testing.TB, c *websocket.Conn) {
	tb.Helper()
	send(tb, c, websocket.MessageText, []byte("ping"))
	if p := recvText(tb, c); string(p) != "pong" {
		tb.Fatalf("ping answered %q, want pong", p)
	}
}

// testBatch builds a batch of n entries with entry sequences from first.
func testBatch(source, corr string, seq, first uint64, n int) *codec.Batch {
	b := &codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, SourceID: []byte(source)}
	if corr != "" {
		b.CorrelationID = []byte(corr)
	}
	for i := range n {
		s := first + uint64(i)
		b.Entries = append(b.Entries, codec.Entry{
			Sequence: s, Timestamp: 1700000000000 + s, Op: codec.OpInsert,
			Table: []byte("users"), RowID: []byte("row-" + itoa(s)), After: []byte(`{"id":` + itoa(s) + `}`),
		})
	}
	return b
}

func encode(tb testing.TB, b *codec.Batch) []byte {
	tb.Helper()
	f, err := codec.EncodeBatch(b)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func itoa(u uint64) string {
	if u == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for u > 0 {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
	}
	return string(b[i:])
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
