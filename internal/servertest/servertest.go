// Package servertest starts a real aggregator on a loopback port for tests,
// with a JSON-lines sink whose committed rows tests can read back.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// Option adjusts the server's configuration.
type Option func(*server.Config)

// WithConfig lets a test set any server.Config field (DataDir and Sink are
// set by the instance).
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// WithSync turns fsync of the write-ahead log on (it is off by default to
// keep tests fast; acks still wait for the write).
func WithSync() Option { return func(c *server.Config) { c.NoSync = false } }

// testLogger discards the server's logs unless LAKEHOUSE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("LAKEHOUSE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Instance is a running server.
type Instance struct {
	// Addr is the loopback host:port of the gRPC server.
	Addr string
	// DataDir is the server's data directory; SinkDir holds the committed rows.
	DataDir, SinkDir string
	// Server is the aggregator; Sink the JSON-lines sink under SinkDir.
	Server *server.Server
	Sink   *jsonl.Sink

	t    testing.TB
	cfg  server.Config
	opts []Option
	gs   *grpc.Server
	wrap func(sink.Sink) sink.Sink
	grpc []grpc.ServerOption
}

// Start starts a server in t.TempDir() and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	dir := t.TempDir()
	in := &Instance{t: t, DataDir: filepath.Join(dir, "data"), SinkDir: filepath.Join(dir, "sink"), opts: opts}
	in.start("127.0.0.1:0")
	t.Cleanup(func() { in.Stop() })
	return in
}

// StartIn is Start with the data directory at dataDir (for example on a
// small filesystem a test fills); the sink stays in t.TempDir().
func StartIn(t testing.TB, dataDir string, opts ...Option) *Instance {
	t.Helper()
	in := &Instance{t: t, DataDir: dataDir, SinkDir: filepath.Join(t.TempDir(), "sink"), opts: opts}
	in.start("127.0.0.1:0")
	t.Cleanup(func() { in.Stop() })
	return in
}

// WrapSink makes later (re)starts hand the server wrap(sink) instead of the
// JSON-lines sink, for fault injection. Call Restart to apply it.
func (in *Instance) WrapSink(wrap func(sink.Sink) sink.Sink) { in.wrap = wrap }

func (in *Instance) start(addr string) {
	in.t.Helper()
	js, err := jsonl.Open(in.SinkDir)
	if err != nil {
		in.t.Fatalf("servertest: open sink: %v", err)
	}
	in.Sink = js
	var sk sink.Sink = js
	if in.wrap != nil {
		sk = in.wrap(js)
	}
	cfg := server.Config{DataDir: in.DataDir, Sink: sk, NoSync: true, Logger: testLogger()}
	for _, o := range in.opts {
		o(&cfg)
	}
	cfg.DataDir, cfg.Sink = in.DataDir, sk
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		in.t.Fatalf("servertest: start server: %v", err)
	}
	var lis net.Listener
	// A restart reuses the port; it can take a moment to be free again.
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		srv.Close()
		in.t.Fatalf("servertest: listen: %v", err)
	}
	gs := grpc.NewServer(append(srv.GRPCOptions(), in.grpc...)...)
	srv.Register(gs)
	go gs.Serve(lis)
	in.Addr, in.Server, in.gs, in.cfg = lis.Addr().String(), srv, gs, cfg
}

// AddGRPCOptions adds options to the gRPC server of the next Restart (an
// interceptor that watches streams, say).
func (in *Instance) AddGRPCOptions(opts ...grpc.ServerOption) {
	in.grpc = append(in.grpc, opts...)
}

// Stop shuts the server down gracefully (flushing). Safe to call twice.
func (in *Instance) Stop() {
	if in.Server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := in.Server.Shutdown(ctx); err != nil {
		in.t.Errorf("servertest: shutdown: %v", err)
	}
	in.gs.Stop()
	in.Server = nil
}

// ShutdownWithin shuts the server down gracefully with a deadline and
// returns Shutdown's error.
func (in *Instance) ShutdownWithin(d time.Duration) error {
	if in.Server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := in.Server.Shutdown(ctx)
	in.gs.Stop()
	in.Server = nil
	return err
}

// Crash stops the server without flushing: buffered batches stay in the
// write-ahead log, as after kill -9 (without a torn tail).
func (in *Instance) Crash() {
	if in.Server == nil {
		return
	}
	in.gs.Stop()
	if err := in.Server.Close(); err != nil {
		in.t.Errorf("servertest: close: %v", err)
	}
	in.Server = nil
}

// Restart crashes the server if it runs and starts it again on the same
// address and data directory.
func (in *Instance) Restart() {
	in.t.Helper()
	in.Crash()
	in.start(in.Addr)
}

// Dial returns a client connection to the server, closed when the test ends.
func (in *Instance) Dial() *grpc.ClientConn {
	in.t.Helper()
	cc, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		in.t.Fatalf("servertest: dial: %v", err)
	}
	in.t.Cleanup(func() { cc.Close() })
	return cc
}

// Records returns every row committed to the sink.
func (in *Instance) Records() []jsonl.Record {
	in.t.Helper()
	recs, err := jsonl.ReadAll(in.SinkDir)
	if err != nil {
		in.t.Fatalf("servertest: read sink: %v", err)
	}
	return recs
}
