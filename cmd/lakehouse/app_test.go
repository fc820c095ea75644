package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

func testAppConfig(dir, httpAddr string) appConfig {
	return appConfig{
		Server: server.Config{DataDir: filepath.Join(dir, "data"), NoSync: true},
		OpenSink: func(context.Context) (sink.Sink, error) {
			return jsonl.Open(filepath.Join(dir, "sink"))
		},
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: httpAddr,
	}
}

// TestAppStartStop starts the app with every part, checks it serves, stops
// it without error, and starts it again on the same data directory.
func TestAppStartStop(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		a, err := startApp(t.Context(), testAppConfig(dir, "127.0.0.1:0"))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		resp, err := http.Get("http://" + a.httpAddr() + "/health")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("round %d: /health: %v %v", round, resp, err)
		}
		resp.Body.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		if err := a.stop(ctx); err != nil {
			t.Fatalf("round %d: stop: %v", round, err)
		}
		cancel()
	}
}

// TestAppStartFailureCleansUp makes the last step of start fail (the HTTP
// address is taken): everything started before is stopped, so the gRPC port
// is closed and the data directory can be used at once.
func TestAppStartFailureCleansUp(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testAppConfig(dir, taken.Addr().String())
	// A known free gRPC port, to check it is closed again afterwards.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr := l.Addr().String()
	l.Close()
	cfg.GRPCAddr = grpcAddr
	if _, err := startApp(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "HTTP listen") {
		t.Fatalf("start with a taken HTTP address: %v", err)
	}
	if c, err := net.DialTimeout("tcp", grpcAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the gRPC port still accepts connections after a failed start")
	}
	a, err := startApp(t.Context(), testAppConfig(dir, ""))
	if err != nil {
		t.Fatalf("start after a failed start: %v", err)
	}
	if err := a.stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestSinkOpenFailureIsNil: a sink that fails to open is no sink at all.
// It came back as a typed nil pointer, which startApp's clean-up then
// closed: serve panicked instead of reporting why the sink did not open
// (seen when three instances started at once on a fresh catalog).
func TestSinkOpenFailureIsNil(t *testing.T) {
	dir := t.TempDir()
	// jsonl's directory cannot be created under a file.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sf := sinkFlags{kind: "jsonl"}
	sk, err := sf.open(t.Context(), filepath.Join(dir, "file"), nil)
	if err == nil {
		t.Fatal("open under a file: no error")
	}
	if sk != nil {
		t.Errorf("failed open returned a non-nil sink %#v", sk)
	}
	cfg := testAppConfig(dir, "")
	cfg.OpenSink = func(ctx context.Context) (sink.Sink, error) { return sf.open(ctx, filepath.Join(dir, "file"), nil) }
	if _, err := startApp(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "open sink") {
		t.Errorf("startApp: %v, want the open error", err)
	}
}
