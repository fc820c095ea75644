package server_test

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// abandonedStream is a server stream whose client has already gone (its
// context is cancelled) but whose connect is still readable: what a server
// finds in its socket buffers after a pause, for the streams a client gave
// up on while the server was stopped.
type abandonedStream struct {
	grpc.ServerStream
	ctx     context.Context
	connect *lakehousev1.StreamRequest
}

func (s *abandonedStream) Context() context.Context { return s.ctx }

func (s *abandonedStream) Recv() (*lakehousev1.StreamRequest, error) {
	if r := s.connect; r != nil {
		s.connect = nil
		return r, nil
	}
	return nil, io.EOF
}

func (s *abandonedStream) Send(*lakehousev1.StreamResponse) error { return s.ctx.Err() }
func (s *abandonedStream) SetHeader(metadata.MD) error            { return nil }
func (s *abandonedStream) SendHeader(metadata.MD) error           { return nil }
func (s *abandonedStream) SetTrailer(metadata.MD)                 {}

// TestAbandonedConnectDoesNotFence: a connect read from a stream its client
// already abandoned does not take the source over from the client's live
// stream. Found by the fault matrix: after a 24 s SIGSTOP the server read a
// Go client's older, abandoned connect after its newest one, fenced the
// live stream, and the client failed for good ("fenced by a newer stream").
func TestAbandonedConnectDoesNotFence(t *testing.T) {
	in := servertest.Start(t)
	cc := in.Dial()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	connect := &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "paused-src"}}}
	if err := live.Send(connect); err != nil {
		t.Fatal(err)
	}
	if r, err := live.Recv(); err != nil || r.GetConnected() == nil {
		t.Fatalf("connect: %v %v", r, err)
	}

	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	err = in.Server.Stream(&abandonedStream{ctx: gone, connect: connect})
	if status.Code(err) != codes.Canceled {
		t.Errorf("abandoned stream's connect: %v, want Canceled", err)
	}

	frame, err := codec.EncodeBatch(workload.Batch("paused-src", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
		_, rerr := live.Recv()
		t.Fatalf("the live stream after an abandoned connect: send %v, recv %v (fenced by a stream its client had given up)", err, rerr)
	}
	r, err := live.Recv()
	if err != nil {
		t.Fatalf("the live stream after an abandoned connect: %v (fenced by a stream its client had given up)", err)
	}
	if r.GetAck() == nil {
		t.Fatalf("want an ack, got %v", r)
	}
}
