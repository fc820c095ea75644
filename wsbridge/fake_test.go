package wsbridge

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server"
)

// fakeServer is a small in-test CDCService: it acks every decodable
// binary_batch (echoing sequence and correlation id), nacks undecodable ones
// invalid_format, dedups entries by (source, entry sequence) and fences an
// older stream of the same source with ABORTED.
type fakeServer struct {
	lakehousev1.UnimplementedCDCServiceServer

	// respond, when set, may replace the answer to a batch: it returns the
	// response to send (nil: send none), whether it decided, and an error that
	// ends the stream.
	respond func(source string, frame []byte, b *codec.Batch) (resp *lakehousev1.StreamResponse, handled bool, err error)

	// maxMsg is the max_message_size the fake announces in Connected
	// (default 16 MiB).
	maxMsg uint32

	mu          sync.Mutex
	redirectTo  string // when set, connects are answered with Redirect to it
	redirectN   int    // when > 0, only that many connects are redirected
	connects    int
	auths       []string // authorization metadata of every call
	lastConn    *lakehousev1.ConnectRequest
	frames      [][]byte                 // every binary_batch received, as received
	rows        map[string][]codec.Entry // stored entries per source (owned)
	seen        map[string]map[uint64]bool
	live        map[string]*context.CancelCauseFunc
	openStreams int
	streamEnds  []error
	flushes     int
}

func newFakeServer() *fakeServer {
	return &fakeServer{
		rows: make(map[string][]codec.Entry),
		seen: make(map[string]map[uint64]bool),
		live: make(map[string]*context.CancelCauseFunc),
	}
}

func (f *fakeServer) Stream(st grpc.BidiStreamingServer[lakehousev1.StreamRequest, lakehousev1.StreamResponse]) (retErr error) {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	cr := req.GetConnect()
	if cr == nil || cr.GetSourceId() == "" {
		return status.Error(codes.InvalidArgument, "first message must be connect with a source id")
	}
	src := cr.GetSourceId()
	f.noteAuth(st.Context())
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	f.mu.Lock()
	f.connects++
	f.lastConn = cr
	if to := f.redirectTo; to != "" {
		if f.redirectN > 0 {
			if f.redirectN--; f.redirectN == 0 {
				f.redirectTo = ""
			}
		}
		f.mu.Unlock()
		if err := st.Send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Redirect{Redirect: &lakehousev1.Redirect{
			Addr: to, SourceId: src, Owner: "fake",
		}}}); err != nil {
			return err
		}
		return status.Errorf(codes.Unavailable, "source %q is served at %q", src, to)
	}
	if old := f.live[src]; old != nil {
		(*old)(status.Error(codes.Aborted, "fenced: a newer stream took over source "+src))
	}
	mine := &cancel
	f.live[src] = mine
	f.openStreams++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if f.live[src] == mine {
			delete(f.live, src)
		}
		f.openStreams--
		f.streamEnds = append(f.streamEnds, retErr)
		f.mu.Unlock()
	}()
	if err := st.Send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Connected{Connected: &lakehousev1.Connected{
		SourceId: src, MaxMessageSize: cmp.Or(f.maxMsg, codec.MaxMessageSize), ServerTimeMs: time.Now().UnixMilli(), SequenceMode: cr.GetSequenceMode(),
	}}}); err != nil {
		return err
	}
	reqs := make(chan *lakehousev1.StreamRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			if c := context.Cause(ctx); status.Code(c) == codes.Aborted {
				return c
			}
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			resp, err := f.handle(src, r)
			if err != nil {
				return err
			}
			if resp != nil {
				if err := st.Send(resp); err != nil {
					return err
				}
			}
		}
	}
}

func (f *fakeServer) handle(src string, r *lakehousev1.StreamRequest) (*lakehousev1.StreamResponse, error) {
	frame := r.GetBinaryBatch()
	if frame == nil {
		switch {
		case r.GetHeartbeat() != nil:
			return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Pong{Pong: &lakehousev1.Pong{TimestampMs: r.GetHeartbeat().GetTimestampMs()}}}, nil
		}
		return nil, nil
	}
	f.mu.Lock()
	f.frames = append(f.frames, append([]byte(nil), frame...))
	f.mu.Unlock()
	b, decErr := codec.DecodeBatchOwned(frame, codec.DecodeOptions{ValidateUTF8: true, ValidateJSON: true})
	if f.respond != nil {
		resp, handled, err := f.respond(src, frame, b)
		if handled || err != nil {
			return resp, err
		}
	}
	if decErr != nil {
		seq, corr := peekIDs(frame)
		return nackResp(seq, string(corr), lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, decErr.Error()), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := f.seen[src]
	if seen == nil {
		seen = make(map[uint64]bool)
		f.seen[src] = seen
	}
	fresh := 0
	for _, e := range b.Entries {
		if !seen[e.Sequence] {
			seen[e.Sequence] = true
			f.rows[src] = append(f.rows[src], e)
			fresh++
		}
	}
	st := lakehousev1.AckStatus_ACK_STATUS_OK
	if fresh == 0 && len(b.Entries) > 0 {
		st = lakehousev1.AckStatus_ACK_STATUS_DUPLICATE
	}
	return ackResp(b.Sequence, string(b.CorrelationID), st), nil
}

func ackResp(seq uint64, corr string, st lakehousev1.AckStatus) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Ack{Ack: &lakehousev1.Ack{
		SequenceNumber: seq, Status: st, CorrelationId: corr, TimestampMs: time.Now().UnixMilli(),
	}}}
}

func nackResp(seq uint64, corr string, reason lakehousev1.NackReason, msg string) *lakehousev1.StreamResponse {
	return &lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Nack{Nack: &lakehousev1.Nack{
		SequenceNumber: seq, Reason: reason, CorrelationId: corr, ErrorMessage: msg, TimestampMs: time.Now().UnixMilli(),
	}}}
}

func (f *fakeServer) noteAuth(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.auths = append(f.auths, strings.Join(md.Get("authorization"), ","))
	f.mu.Unlock()
}

func (f *fakeServer) authSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auths...)
}

func (f *fakeServer) Flush(ctx context.Context, _ *lakehousev1.FlushRequest) (*lakehousev1.FlushResponse, error) {
	f.noteAuth(ctx)
	f.mu.Lock()
	f.flushes++
	n := f.flushes
	f.mu.Unlock()
	return &lakehousev1.FlushResponse{Result: &lakehousev1.FlushResult{
		Success: true, BatchesFlushed: uint64(n), EntriesFlushed: 10, BytesWritten: 1234,
		Paths: []string{"cdc/users/data/00001.parquet"}, DurationMs: 7,
	}}, nil
}

func (f *fakeServer) GetStatus(context.Context, *lakehousev1.GetStatusRequest) (*lakehousev1.GetStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &lakehousev1.ServerStatus{
		State:            lakehousev1.ParentState_PARENT_STATE_RECEIVING,
		Buffer:           &lakehousev1.BufferStats{BatchCount: uint64(len(f.frames)), EntryCount: 3, TotalSizeBytes: 300, Utilization: 0.25, OldestBatchTimeMs: 1700000000000},
		ConnectedSources: uint32(f.openStreams),
		Recovery:         &lakehousev1.RecoveryStatus{PendingBatches: 2},
		NextFlushTimeMs:  1700000030000,
		ServerTimeMs:     time.Now().UnixMilli(),
	}
	for src := range f.live {
		s.Sources = append(s.Sources, &lakehousev1.SourceStatus{SourceId: src, Connected: true, SequenceMode: lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY, EntriesReceived: uint64(len(f.rows[src]))})
	}
	return &lakehousev1.GetStatusResponse{Status: s}, nil
}

// snapshot helpers

func (f *fakeServer) frameCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.frames)
}

func (f *fakeServer) lastFrame() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.frames) == 0 {
		return nil
	}
	return f.frames[len(f.frames)-1]
}

func (f *fakeServer) connectCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects
}

func (f *fakeServer) lastConnect() *lakehousev1.ConnectRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastConn
}

func (f *fakeServer) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.openStreams
}

func (f *fakeServer) entrySeqs(src string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]uint64, 0, len(f.rows[src]))
	for _, e := range f.rows[src] {
		out = append(out, e.Sequence)
	}
	return out
}

// startFake serves f on a loopback gRPC listener and returns a client
// connection to it; both are closed when the test ends.
func startFake(tb testing.TB, f *fakeServer) *grpc.ClientConn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(server.MaxGRPCMessageSize))
	lakehousev1.RegisterCDCServiceServer(gs, f)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cc.Close()
		gs.Stop()
		<-served
	})
	return cc
}

// le is used to patch frames in tests.
var le = binary.LittleEndian
