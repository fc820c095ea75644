package server_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/dirlock"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// shutdownBound is how long Shutdown may take with a peer that does not
// read, whatever its context allows: a few times the server's bounded
// waits, far below the minute the test gives it.
const shutdownBound = 15 * time.Second

// TestShutdownWithPeerNotReading: a client that keeps its connection but no
// longer reads its stream (its flow-control window is full) must not hold
// Shutdown up. The server's sends to it block until the stream ends; the
// shutting_down nack is best-effort, so the stream ends without it. Two
// cases: the session's own goroutine blocked sending (pongs), and the reply
// goroutine blocked sending acks while holding the stream's send lock (the
// nack waits for it). Before the fix, Shutdown waited for such a stream
// until its context ended (60 s in lakehouse serve, as long as the harness
// waits for the process).
func TestShutdownWithPeerNotReading(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stick func(t *testing.T, in *servertest.Instance, st *notReading)
	}{
		{"pongs", stickPongs},
		{"acks", stickAcks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.FlushInterval = time.Hour }))
			tc.stick(t, in, notReadingStream(t, in, "stuck-"+tc.name))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- in.Server.Shutdown(ctx) }()
			select {
			case err := <-done:
				t.Logf("Shutdown returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(shutdownBound):
				t.Fatalf("Shutdown still waiting after %v for a stream whose peer does not read", shutdownBound)
			}
		})
	}
}

// notReading is a stream the test never reads after connect.
type notReading struct {
	lakehousev1.CDCService_StreamClient
	cancel context.CancelFunc
}

// notReadingStream opens a stream with the smallest flow-control windows
// gRPC allows and connects it.
func notReadingStream(t *testing.T, in *servertest.Instance, source string) *notReading {
	t.Helper()
	const window = 64 << 10 // gRPC's minimum; also turns its window growth off
	cc, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{
		Connect: &lakehousev1.ConnectRequest{SourceId: source}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetConnected() == nil {
		t.Fatalf("connect: %v %v", r, err)
	}
	return &notReading{st, cancel}
}

// stickPongs sends heartbeats until the server stops taking them: their
// pongs fill the window, the session's goroutine blocks sending one and
// reads no more. At most 30,000 (more pongs than the window and the
// server's write buffer hold).
func stickPongs(t *testing.T, _ *servertest.Instance, st *notReading) {
	const most = 30_000
	var sent atomic.Int64
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for range most {
			if st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{
				Heartbeat: &lakehousev1.Heartbeat{TimestampMs: time.Now().UnixMilli()}}}) != nil {
				return
			}
			sent.Add(1)
		}
	}()
	t.Cleanup(func() { st.cancel(); <-sending })
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-sending:
			return
		case <-time.After(100 * time.Millisecond):
		}
		if n := sent.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > time.Second {
			t.Logf("the server stopped reading after %d heartbeats", n)
			return
		}
	}
}

// stickAcks sends a few batches whose acks (each echoes a 16 KiB
// correlation id) overflow the window: the reply goroutine blocks sending
// one while holding the stream's send lock, with fewer batches in flight
// than the pipeline holds, so the session's goroutine stays free and, at
// shutdown, tries to send the shutting_down nack.
func stickAcks(t *testing.T, in *servertest.Instance, st *notReading) {
	const batches = 12 // 8 acks of 16 KiB fill the window and the write buffer
	corr := strings.Repeat("c", 16<<10)
	for i := range batches {
		b := smallBatch("stuck-acks", uint64(i+1), 1)
		b.CorrelationID = []byte(corr)
		frame, err := codec.EncodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
			t.Fatal(err)
		}
	}
	// A batch enters the buffer just before its ack is sent: the count
	// stops below 12 once an ack send blocks.
	last, since := uint64(0), time.Now()
	for time.Since(since) < time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := in.Server.Status().GetBuffer().GetEntryCount(); n != last {
			last, since = n, time.Now()
		}
	}
	if last == 0 || last >= batches {
		t.Fatalf("%d of %d batches buffered: the acks did not block", last, batches)
	}
	t.Logf("the reply goroutine blocked after %d acks", last)
}

// deafSink is a sink whose commits wait until released, whatever their
// context says (a store client that does not honour cancellation).
type deafSink struct {
	sink.Sink
	entered chan struct{} // closed by the first commit
	once    sync.Once
	release chan struct{}
}

func (d *deafSink) Commit(ctx context.Context, fl *sink.Flush) (sink.Result, error) {
	d.once.Do(func() { close(d.entered) })
	<-d.release
	return d.Sink.Commit(context.Background(), fl)
}

// TestShutdownWithSinkIgnoringContext: a final flush stuck in a sink call
// that ignores its context does not hold Shutdown past its deadline; the
// log and the data directory are closed once the call returns. Before,
// Shutdown waited for the flusher without bound.
func TestShutdownWithSinkIgnoringContext(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.FlushInterval = time.Hour }))
	ds := &deafSink{entered: make(chan struct{}), release: make(chan struct{})}
	in.WrapSink(func(s sink.Sink) sink.Sink { ds.Sink = s; return ds })
	in.Restart()
	var once sync.Once
	release := func() { once.Do(func() { close(ds.release) }) }
	t.Cleanup(release)
	ts := openStream(t, in.Dial(), "deaf", 0)
	if a := ts.sendFrame(smallBatch("deaf", 1, 2)).GetAck(); a == nil {
		t.Fatal("batch not acked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- in.Server.Shutdown(ctx) }()
	<-ds.entered
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "sink call still running") {
			t.Fatalf("Shutdown with a stuck sink call: %v", err)
		}
	case <-time.After(shutdownBound):
		t.Fatalf("Shutdown (deadline 1 s) still waiting after %v for a sink call that ignores its context", shutdownBound)
	}
	// Once the call returns, the data directory is released.
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := dirlock.Acquire(in.DataDir)
		if err == nil {
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("data directory still locked 10 s after the sink call returned: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lateSends counts the sends made on a stream after its handler returned,
// which gRPC forbids (they race with the stream's status).
type lateSends struct{ n atomic.Int64 }

func (l *lateSends) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	w := &watchedStream{ServerStream: ss, late: l}
	err := handler(srv, w)
	w.returned.Store(true)
	return err
}

type watchedStream struct {
	grpc.ServerStream
	late     *lateSends
	returned atomic.Bool
}

func (w *watchedStream) SendMsg(m any) error {
	if w.returned.Load() {
		w.late.n.Add(1)
	}
	return w.ServerStream.SendMsg(m)
}

// TestNoSendAfterStreamEnds: at shutdown, the shutting_down nack of a
// stream whose reply goroutine is blocked sending (the peer does not read)
// is abandoned after a second; the stream then ends. The abandoned send
// must not be made once the handler has returned. Before the fix, it got
// the send lock when the blocked ack failed and sent on the ended stream.
func TestNoSendAfterStreamEnds(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.FlushInterval = time.Hour }))
	var late lateSends
	in.AddGRPCOptions(grpc.ChainStreamInterceptor(late.intercept))
	in.Restart()
	stickAcks(t, in, notReadingStream(t, in, "stuck-acks"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := in.Server.Shutdown(ctx); err != nil {
		t.Logf("Shutdown: %v", err)
	}
	// The blocked ack fails once the stream ends, and the abandoned nack
	// gets its turn right after.
	time.Sleep(time.Second)
	if n := late.n.Load(); n != 0 {
		t.Fatalf("%d sends on a stream after its handler returned", n)
	}
}
