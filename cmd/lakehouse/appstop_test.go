package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// TestAppStopWithClientsThatStayOpen: clients that keep their calls open
// through a shutdown, a health watch (it never ends by itself) and a CDC
// stream whose peer stopped reading, do not hold the stop for its whole
// budget: gRPC's graceful stop gets a bounded share, then Stop cuts them.
// Before, stop waited for them until its context ended (lakehouse serve's
// --shutdown-timeout, 60 s by default, as long as a supervisor or the
// integration harness waits for the process), so the process did not exit
// in time.
func TestAppStopWithClientsThatStayOpen(t *testing.T) {
	a, err := startApp(t.Context(), testAppConfig(t.TempDir(), ""))
	if err != nil {
		t.Fatal(err)
	}
	const window = 64 << 10 // gRPC's minimum; also turns its window growth off
	cc, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v", r, err)
	}
	go func() { // keeps reading the watch, which never ends by itself
		for watch.RecvMsg(new(healthpb.HealthCheckResponse)) == nil {
		}
	}()

	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{
		Connect: &lakehousev1.ConnectRequest{SourceId: "not-reading"}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetConnected() == nil {
		t.Fatalf("connect: %v %v", r, err)
	}
	// Heartbeats, never reading their pongs, until the server stops
	// taking them (its sends block) or 30,000 (more pongs than the window
	// and the server's write buffer hold).
	var sent atomic.Int64
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for range 30_000 {
			if st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{
				Heartbeat: &lakehousev1.Heartbeat{TimestampMs: time.Now().UnixMilli()}}}) != nil {
				return
			}
			sent.Add(1)
		}
	}()
	defer func() { cancel(); <-sending }()
	for last, since := int64(-1), time.Now(); time.Since(since) < time.Second; {
		time.Sleep(100 * time.Millisecond)
		if n := sent.Load(); n != last {
			last, since = n, time.Now()
		}
	}

	const bound = 15 * time.Second // the drain share and the nack's wait, with room
	sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
	defer scancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- a.stop(sctx) }()
	select {
	case err := <-done:
		t.Logf("stop returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	case <-time.After(bound):
		cancel() // the clients leave, so that stop can end
		<-done
		t.Fatalf("stop still waiting after %v for clients that stay open", bound)
	}
}

// TestAppStopWithSilentConnection: a connection accepted but silent since
// (its client's link blackholed before the HTTP/2 preface) is not yet a
// gRPC transport, so keepalives do not cover it, and gRPC's Stop and
// GracefulStop wait for its handshake: --grpc-handshake-timeout bounds that
// (gRPC's default is 120 s), and stop does not wait past its own deadline
// either way. Before, the stop of lakehouse serve in TestNetworkFaults hung
// here until the harness gave up (goroutine in newHTTP2Transport).
func TestAppStopWithSilentConnection(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string      // limit flags; nil: no gRPC options
		deadline time.Duration // stop's
		wantErr  bool
	}{
		{"handshake timeout", []string{"--" + grpcHandshakeTimeoutKey, "1s"}, time.Minute, false},
		{"no handshake timeout", nil, 2 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testAppConfig(t.TempDir(), "")
			if tc.args != nil {
				var lf limitFlags
				fs := flag.NewFlagSet("serve", flag.ContinueOnError)
				lf.register(fs)
				if err := fs.Parse(tc.args); err != nil {
					t.Fatal(err)
				}
				cfg.GRPCOptions = lf.grpcOptions()
			}
			a, err := startApp(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			silent, err := net.Dial("tcp", a.grpcAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()
			time.Sleep(100 * time.Millisecond) // accepted: its handshake waits
			const bound = 10 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- a.stop(ctx) }()
			select {
			case err := <-done:
				t.Logf("stop returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
				if (err != nil) != tc.wantErr {
					t.Errorf("stop: %v (want an error: %v)", err, tc.wantErr)
				}
			case <-time.After(bound):
				silent.Close()
				t.Fatalf("stop still waiting after %v for a connection that never sent its preface", bound)
			}
			silent.Close()
			// gRPC's Stop, if left running, ends with the connection.
			time.Sleep(100 * time.Millisecond)
		})
	}
}

// stuckSink is a sink whose commits never return (a store client that
// ignores its context) and whose Close waits for the commit in progress, as
// the Iceberg sink's does.
type stuckSink struct {
	sink.Sink
	mu      sync.Mutex
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *stuckSink) Commit(ctx context.Context, fl *sink.Flush) (sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return sink.Result{}, errors.New("released")
}

func (s *stuckSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Sink.Close()
}

// TestAppStopWithStuckSink: a final commit stuck in a sink that ignores its
// context does not hold the stop past its deadline, neither in the server's
// shutdown nor in the sink's Close. Before, both waited without bound.
func TestAppStopWithStuckSink(t *testing.T) {
	dir := t.TempDir()
	ss := &stuckSink{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := testAppConfig(dir, "")
	cfg.OpenSink = func(context.Context) (sink.Sink, error) {
		js, err := jsonl.Open(filepath.Join(dir, "sink"))
		ss.Sink = js
		return ss, err
	}
	a, err := startApp(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer close(ss.release) // lets the leftover commit and Close end
	cc, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{
		Connect: &lakehousev1.ConnectRequest{SourceId: "stuck"}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetConnected() == nil {
		t.Fatalf("connect: %v %v", r, err)
	}
	frame, err := codec.EncodeBatch(&codec.Batch{Sequence: 1, SourceID: []byte("stuck"), Entries: workload.Entries(0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetAck() != nil {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	const bound = 10 * time.Second
	done := make(chan error, 1)
	go func() { done <- a.stop(ctx) }()
	<-ss.entered
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("stop with a stuck sink call reported no error")
		}
		t.Logf("stop: %v", err)
	case <-time.After(bound):
		t.Fatalf("stop (deadline 2 s) still waiting after %v for a stuck sink call", bound)
	}
}
