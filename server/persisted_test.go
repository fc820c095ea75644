package server

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// fakeStream is a CDC stream without a network, so that a test can hold an
// ack inside Send: the moment between a batch's completion and its ack
// reaching the client.
type fakeStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	reqs   chan *lakehousev1.StreamRequest
	sent   chan *lakehousev1.StreamResponse

	mu      sync.Mutex
	hold    chan struct{} // the next ack's Send waits for it to be closed
	holding chan struct{} // closed when that Send has started
}

func newFakeStream() *fakeStream {
	ctx, cancel := context.WithCancel(context.Background())
	return &fakeStream{ctx: ctx, cancel: cancel, reqs: make(chan *lakehousev1.StreamRequest),
		sent: make(chan *lakehousev1.StreamResponse, 100)}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Recv() (*lakehousev1.StreamRequest, error) {
	select {
	case r := <-f.reqs:
		return r, nil
	case <-f.ctx.Done():
		return nil, io.EOF
	}
}

func (f *fakeStream) Send(r *lakehousev1.StreamResponse) error {
	f.mu.Lock()
	hold, holding := f.hold, f.holding
	if r.GetAck() != nil {
		f.hold = nil
	} else {
		hold = nil
	}
	f.mu.Unlock()
	if hold != nil {
		close(holding)
		<-hold
	}
	f.sent <- r
	return nil
}

// holdNextAck makes the next ack's Send wait until release is called;
// holding is closed once it waits.
func (f *fakeStream) holdNextAck() (holding <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hold := make(chan struct{})
	f.hold, f.holding = hold, make(chan struct{})
	return f.holding, func() { close(hold) }
}

func (f *fakeStream) next(t *testing.T) *lakehousev1.StreamResponse {
	t.Helper()
	select {
	case r := <-f.sent:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
		return nil
	}
}

func (f *fakeStream) send(t *testing.T, r *lakehousev1.StreamRequest) {
	t.Helper()
	select {
	case f.reqs <- r:
	case <-time.After(10 * time.Second):
		t.Fatal("stream not reading")
	}
}

func (f *fakeStream) batch(t *testing.T, source string, seq uint64) {
	t.Helper()
	frame, err := codec.EncodeBatch(&codec.Batch{Sequence: seq, SourceID: []byte(source),
		Entries: workload.Entries(int64(seq-1)*5, 5)})
	if err != nil {
		t.Fatal(err)
	}
	f.send(t, &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}})
}

// startFake runs s.Stream on a fake stream connected as source and returns
// it after its Connected response.
func startFake(t *testing.T, s *Server, source string) (*fakeStream, *lakehousev1.Connected) {
	t.Helper()
	f := newFakeStream()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Stream(f)
	}()
	t.Cleanup(func() { f.cancel(); <-done })
	f.send(t, &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}})
	c := f.next(t).GetConnected()
	if c == nil {
		t.Fatal("first response is not connected")
	}
	return f, c
}

// wantAck reads f up to the next ack, which must be batch seq's; persisted
// messages may come first.
func wantAck(t *testing.T, f *fakeStream, seq uint64) {
	t.Helper()
	r := f.next(t)
	for r.GetPersisted() != nil {
		r = f.next(t)
	}
	if a := r.GetAck(); a.GetSequenceNumber() != seq {
		t.Fatalf("got %v, want the ack of batch %d", r, seq)
	}
}

func newPersistedTestServer(t *testing.T) *Server {
	t.Helper()
	js, err := jsonl.Open(filepath.Join(t.TempDir(), "sink"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{DataDir: filepath.Join(t.TempDir(), "data"), Sink: js, NoSync: true,
		FlushInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPersistedNeverOvertakesTheAck: a flush may commit a durable batch
// whose ack is not sent yet, but the persisted message that covers it always
// follows its ack (clients count a batch persisted only once acked; one
// persisted before its ack was lost to them). And a flush requested once the
// ack is received covers the batch.
func TestPersistedNeverOvertakesTheAck(t *testing.T) {
	s := newPersistedTestServer(t)
	f, _ := startFake(t, s, "order")
	holding, release := f.holdNextAck()
	f.batch(t, "order", 1)
	<-holding // batch 1 is durable; its ack is on its way
	res, err := s.FlushNow(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.BatchesFlushed != 1 {
		release()
		t.Fatalf("a flush committed %d batches, want the durable one whose ack is on its way", res.BatchesFlushed)
	}
	release()
	if a := f.next(t).GetAck(); a.GetSequenceNumber() != 1 {
		t.Fatalf("got %v first, want the ack of batch 1 (before its persisted)", a)
	}
	if p := f.next(t).GetPersisted(); p.GetSequenceNumber() != 1 {
		t.Fatalf("got %v, want persisted 1", p)
	}
	// Acked, then a flush requested at once covers the batch.
	f.batch(t, "order", 2)
	wantAck(t, f, 2)
	if res, err := s.FlushNow(context.Background(), 0); err != nil || res.BatchesFlushed != 1 {
		t.Fatalf("flush right after the ack of batch 2: %v %v, want it committed", res, err)
	}
	if p := f.next(t).GetPersisted(); p.GetSequenceNumber() != 2 {
		t.Fatalf("got %v, want persisted 2", p)
	}
}

// TestTakeoverGetsTheNewestWatermark: a commit that lands while a new stream
// takes over (waiting for its predecessor's appends) reaches the new stream:
// Connected and the first persisted message carry it, not the watermark of
// before the commit.
func TestTakeoverGetsTheNewestWatermark(t *testing.T) {
	s := newPersistedTestServer(t)
	a, _ := startFake(t, s, "takeover")
	a.batch(t, "takeover", 1)
	wantAck(t, a, 1)
	if _, err := s.FlushNow(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	a.batch(t, "takeover", 2)
	wantAck(t, a, 2)
	holding, release := a.holdNextAck()
	a.batch(t, "takeover", 3)
	<-holding // batch 3's append is not settled until its ack is out

	b := newFakeStream()
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		_ = s.Stream(b)
	}()
	defer func() { b.cancel(); <-bDone }()
	b.send(t, &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "takeover"}}})
	// Wait until b owns the source; its attach now waits for batch 3.
	s.mu.Lock()
	src := s.sources["takeover"]
	s.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; {
		src.mu.Lock()
		owner := src.owner
		src.mu.Unlock()
		if owner != nil && owner.stream == b {
			break
		}
		if time.Now().After(deadline) {
			release()
			t.Fatal("the new stream never took over")
		}
		time.Sleep(time.Millisecond)
	}
	res, err := s.FlushNow(context.Background(), 0) // commits batches 2 and 3 (durable, its ack on its way)
	release()
	if err != nil || res.BatchesFlushed != 2 {
		t.Fatalf("flush during the takeover: %v %v", res, err)
	}
	c := b.next(t).GetConnected()
	// Connected may predate the commit (batch 3 settled when it was
	// enqueued, before its ack); the persisted message must carry it.
	if p := c.GetPersistedSequence(); (p != 1 && p != 3) || c.GetLastSequence() != 3 {
		t.Fatalf("connected %v: want persisted 1 or 3, last 3", c)
	}
	// The persisted messages rise to 3 (the attach's own, 1, may come
	// first), never back.
	for last := uint64(0); last < 3; {
		p := b.next(t).GetPersisted()
		if p == nil || p.GetSequenceNumber() < last || p.GetSequenceNumber() > 3 {
			t.Fatalf("persisted message %v after %d, want a rise to 3", p, last)
		}
		last = p.GetSequenceNumber()
	}
}
