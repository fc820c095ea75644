package client

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// action is what the fake server does with one received batch.
type action struct {
	nack     lakehousev1.NackReason // refuse it with this reason
	delayMs  uint32                 // retry_delay_ms of the nack
	expected uint64                 // expected_sequence of an INVALID_SEQUENCE nack (0: last+1)
	cut      bool                   // break the stream before storing it
	cutAfter bool                   // store it, then break the stream (ack lost)
	drop     bool                   // store it, send no ack
	ignore   bool                   // neither store nor answer it (a black hole)
}

// recvBatch is what the fake server was sent.
type recvBatch struct {
	seq     uint64
	entries []codec.Entry
}

// fakeServer is an in-test CDCService with real sequencing semantics
// (last+1 accepted, duplicates, INVALID_SEQUENCE for gaps, fencing) and
// scripted faults.
type fakeServer struct {
	lakehousev1.UnimplementedCDCServiceServer
	t testing.TB

	mu         sync.Mutex
	addr       string
	gs         *grpc.Server
	last       map[string]uint64
	persisted  map[string]uint64
	stored     map[string][]recvBatch
	received   map[string]map[uint64]int // receipts per batch number
	gen        map[string]int
	streams    map[string]*fakeStream
	hook       func(src string, seq uint64, firstEntry uint64, n int) action
	refuse     error  // when set, Stream ends with it after the connect
	redirectTo string // when set, connects are answered with Redirect to it
	redirectN  int    // when > 0, only that many connects are redirected
	ackDelay   time.Duration
	ackStatus  lakehousev1.AckStatus // status of acks (default OK)
	hold       chan struct{}         // when set, acks wait until it is closed
	connects   int
	heartbeats int
	flushes    int
	structured int
	batchTS    []int64 // timestamp_ms of every batch received
	hbTS       []int64 // timestamp_ms of every heartbeat received
}

type fakeStream struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingServer[lakehousev1.StreamRequest, lakehousev1.StreamResponse]
}

func (s *fakeStream) send(r *lakehousev1.StreamResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(r)
}

// startFake starts a fake server on a loopback port, stopped at test end.
func startFake(t testing.TB) *fakeServer {
	t.Helper()
	f := &fakeServer{
		t:         t,
		last:      map[string]uint64{},
		persisted: map[string]uint64{},
		stored:    map[string][]recvBatch{},
		received:  map[string]map[uint64]int{},
		gen:       map[string]int{},
		streams:   map[string]*fakeStream{},
	}
	f.listen("127.0.0.1:0")
	t.Cleanup(f.stop)
	return f
}

func (f *fakeServer) listen(addr string) {
	f.t.Helper()
	var lis net.Listener
	var err error
	for i := 0; i < 100; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("fake: listen: %v", err)
	}
	gs := grpc.NewServer()
	lakehousev1.RegisterCDCServiceServer(gs, f)
	f.mu.Lock()
	f.addr, f.gs = lis.Addr().String(), gs
	f.mu.Unlock()
	go func() { _ = gs.Serve(lis) }()
}

func (f *fakeServer) stop() {
	f.mu.Lock()
	gs := f.gs
	f.gs = nil
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
	f.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
}

// restart stops the server and starts it again on the same port after down,
// keeping its state (as a server with a durable log would).
func (f *fakeServer) restart(down time.Duration) {
	f.t.Helper()
	f.stop()
	time.Sleep(down)
	f.listen(f.addr)
}

// redirect makes the next n connects (0: all) answer Redirect to addr.
func (f *fakeServer) redirect(addr string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redirectTo, f.redirectN = addr, n
}

func (f *fakeServer) Addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr
}

func (f *fakeServer) setHook(h func(src string, seq, firstEntry uint64, n int) action) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// forget makes the server lose everything of src after batch last (a server
// that lost acknowledged data).
func (f *fakeServer) forget(src string, last uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last[src] = last
	var keep []recvBatch
	for _, b := range f.stored[src] {
		if b.seq <= last {
			keep = append(keep, b)
		}
	}
	f.stored[src] = keep
}

// entrySeqs returns the entry sequences stored for src, in batch order.
func (f *fakeServer) entrySeqs(src string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, b := range f.stored[src] {
		for _, e := range b.entries {
			out = append(out, e.Sequence)
		}
	}
	return out
}

func (f *fakeServer) batchSeqs(src string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, b := range f.stored[src] {
		out = append(out, b.seq)
	}
	return out
}

func (f *fakeServer) counts() (connects, heartbeats, flushes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects, f.heartbeats, f.flushes
}

// Flush marks everything persisted and tells the live streams.
func (f *fakeServer) Flush(ctx context.Context, req *lakehousev1.FlushRequest) (*lakehousev1.FlushResponse, error) {
	f.mu.Lock()
	f.flushes++
	var n uint64
	type note struct {
		fs  *fakeStream
		seq uint64
	}
	var notes []note
	for src, last := range f.last {
		if last > f.persisted[src] {
			n += last - f.persisted[src]
			f.persisted[src] = last
		}
		if fs := f.streams[src]; fs != nil {
			notes = append(notes, note{fs, last})
		}
	}
	f.mu.Unlock()
	for _, nt := range notes {
		_ = nt.fs.send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Persisted{Persisted: &lakehousev1.Persisted{SequenceNumber: nt.seq}}})
	}
	return &lakehousev1.FlushResponse{Result: &lakehousev1.FlushResult{Success: true, BatchesFlushed: n, Reason: req.GetReason()}}, nil
}

func (f *fakeServer) Stream(stream grpc.BidiStreamingServer[lakehousev1.StreamRequest, lakehousev1.StreamResponse]) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	conn := req.GetConnect()
	if conn == nil || conn.GetSourceId() == "" {
		return status.Error(codes.InvalidArgument, "connect first")
	}
	src := conn.GetSourceId()
	fs := &fakeStream{stream: stream}
	f.mu.Lock()
	f.connects++
	if err := f.refuse; err != nil {
		f.mu.Unlock()
		return err
	}
	if to := f.redirectTo; to != "" {
		if f.redirectN > 0 {
			if f.redirectN--; f.redirectN == 0 {
				f.redirectTo = ""
			}
		}
		f.mu.Unlock()
		// As the real server: Redirect, then UNAVAILABLE.
		if err := fs.send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Redirect{Redirect: &lakehousev1.Redirect{
			Addr: to, SourceId: src, Owner: "fake",
		}}}); err != nil {
			return err
		}
		return status.Errorf(codes.Unavailable, "source %q is served at %q", src, to)
	}
	f.gen[src]++
	gen := f.gen[src]
	f.streams[src] = fs
	last, pers := f.last[src], f.persisted[src]
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if f.streams[src] == fs {
			delete(f.streams, src)
		}
		f.mu.Unlock()
	}()
	if err := fs.send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Connected{Connected: &lakehousev1.Connected{
		SourceId: src, LastSequence: last, PersistedSequence: pers, SequenceMode: lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH,
	}}}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		fenced := f.gen[src] != gen
		f.mu.Unlock()
		if fenced {
			return status.Error(codes.Aborted, "fenced by a newer stream")
		}
		switch k := req.GetKind().(type) {
		case *lakehousev1.StreamRequest_Heartbeat:
			f.mu.Lock()
			f.heartbeats++
			f.hbTS = append(f.hbTS, k.Heartbeat.GetTimestampMs())
			f.mu.Unlock()
			if err := fs.send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Pong{Pong: &lakehousev1.Pong{TimestampMs: k.Heartbeat.GetTimestampMs()}}}); err != nil {
				return err
			}
		case *lakehousev1.StreamRequest_BinaryBatch:
			b, err := codec.DecodeBatchOwned(k.BinaryBatch, codec.DecodeOptions{StrictChecksum: true})
			if err != nil {
				if err := fs.send(nack(0, "", lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, 0, 0)); err != nil {
					return err
				}
				continue
			}
			f.mu.Lock()
			f.batchTS = append(f.batchTS, int64(b.Timestamp))
			f.mu.Unlock()
			if err := f.process(fs, src, b.Sequence, string(b.CorrelationID), b.Entries); err != nil {
				return err
			}
		case *lakehousev1.StreamRequest_Batch:
			pb := k.Batch
			es := make([]codec.Entry, len(pb.GetEntries()))
			for i, e := range pb.GetEntries() {
				es[i] = codec.Entry{Sequence: e.GetSequence(), Timestamp: uint64(e.GetTimestampMs()), Op: fakeOp(e.GetOperation()),
					Table: []byte(e.GetTable()), RowID: []byte(e.GetRowId())}
				if e.GetBefore() != "" {
					es[i].Before = []byte(e.GetBefore())
				}
				if e.GetAfter() != "" {
					es[i].After = []byte(e.GetAfter())
				}
			}
			f.mu.Lock()
			f.structured++
			f.batchTS = append(f.batchTS, pb.GetTimestampMs())
			f.mu.Unlock()
			if err := f.process(fs, src, pb.GetSequenceNumber(), pb.GetCorrelationId(), es); err != nil {
				return err
			}
		}
	}
}

func nack(seq uint64, corr string, r lakehousev1.NackReason, delay uint32, expected uint64) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Nack{Nack: &lakehousev1.Nack{
		SequenceNumber: seq, CorrelationId: corr, Reason: r, RetryDelayMs: delay, ExpectedSequence: expected,
		ShouldRetry: r != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, ErrorMessage: "scripted " + r.String(),
	}}}
}

func ack(seq uint64, corr string, st lakehousev1.AckStatus) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Ack{Ack: &lakehousev1.Ack{SequenceNumber: seq, CorrelationId: corr, Status: st}}}
}

func (f *fakeServer) process(fs *fakeStream, src string, seq uint64, corr string, entries []codec.Entry) error {
	f.mu.Lock()
	if f.received[src] == nil {
		f.received[src] = map[uint64]int{}
	}
	f.received[src][seq]++
	var first uint64
	if len(entries) > 0 {
		first = entries[0].Sequence
	}
	var act action
	if f.hook != nil {
		act = f.hook(src, seq, first, f.received[src][seq])
	}
	last := f.last[src]
	if act.cut {
		f.mu.Unlock()
		return status.Error(codes.Unavailable, "scripted cut")
	}
	if act.ignore {
		f.mu.Unlock()
		return nil
	}
	if act.nack != 0 {
		f.mu.Unlock()
		exp := act.expected
		if act.nack == lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE && exp == 0 {
			exp = last + 1
		}
		return fs.send(nack(seq, corr, act.nack, act.delayMs, exp))
	}
	if seq <= last {
		f.mu.Unlock()
		return fs.send(ack(seq, corr, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE))
	}
	if seq != last+1 {
		f.mu.Unlock()
		return fs.send(nack(seq, corr, lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, 0, last+1))
	}
	f.last[src] = seq
	f.stored[src] = append(f.stored[src], recvBatch{seq: seq, entries: entries})
	delay, hold, st := f.ackDelay, f.hold, f.ackStatus
	f.mu.Unlock()
	if st == 0 {
		st = lakehousev1.AckStatus_ACK_STATUS_OK
	}
	if act.cutAfter {
		return status.Error(codes.Unavailable, "scripted cut after store")
	}
	if act.drop {
		return nil
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if hold != nil {
		<-hold
	}
	return fs.send(ack(seq, corr, st))
}

// fakeOp maps a proto operation to the codec's, as the server does.
func fakeOp(o lakehousev1.Operation) codec.Op {
	op, _ := protomap.Op(o)
	return op
}
