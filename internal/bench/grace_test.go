package bench

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// silentServer accepts streams, answers connect and never acknowledges a
// batch: a server whose storage or disk hangs. With deaf it does not even
// read the batches, as a paused process, so that senders block in flow
// control.
type silentServer struct {
	lakehousev1.UnimplementedCDCServiceServer
	deaf bool
}

func (ss silentServer) Stream(st grpc.BidiStreamingServer[lakehousev1.StreamRequest, lakehousev1.StreamResponse]) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	if err := st.Send(&lakehousev1.StreamResponse{Kind: &lakehousev1.StreamResponse_Connected{
		Connected: &lakehousev1.Connected{SourceId: req.GetConnect().GetSourceId()}}}); err != nil {
		return err
	}
	for !ss.deaf {
		if _, err := st.Recv(); err != nil {
			break // a half-close: the answers still never come
		}
	}
	<-st.Context().Done()
	return nil
}

func startSilent(t *testing.T, deaf bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	lakehousev1.RegisterCDCServiceServer(gs, silentServer{deaf: deaf})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// TestRunEndsWithinGrace: against a server that never acknowledges, every
// mode ends within its grace period after the sending window (or, without
// a duration, after the last ack that never came) and reports what stayed
// unacknowledged, instead of waiting forever.
func TestRunEndsWithinGrace(t *testing.T) {
	addrs := map[string]string{"silent": startSilent(t, false), "deaf": startSilent(t, true)}
	const grace = 500 * time.Millisecond
	modes := []struct {
		name string
		run  func(context.Context, Config) (*Summary, error)
	}{{"client", Run}, {"frames", Frames}, {"raw", RawStreamConfig}}
	for _, m := range modes {
		for _, srv := range []string{"silent", "deaf"} {
			for _, bound := range []string{"duration", "entries"} {
				t.Run(m.name+"/"+srv+"/"+bound, func(t *testing.T) {
					cfg := Config{Addr: addrs[srv], Sources: 2, BatchSize: 100, MaxPending: 4, Grace: grace}
					if bound == "duration" {
						cfg.Duration = 300 * time.Millisecond
					} else {
						cfg.Entries = 1 << 20 // far more than a silent server lets out
					}
					if m.name == "raw" && bound == "entries" && srv == "silent" {
						cfg.Entries = 2000 // raw sends without waiting: keep it short
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					start := time.Now()
					s, err := m.run(ctx, cfg)
					took := time.Since(start)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("%v after %v", s, took.Round(time.Millisecond))
					if ctx.Err() != nil {
						t.Fatalf("the run lasted until the test's own deadline")
					}
					if s.UnackedBatches == 0 || s.UnackedEntries != s.UnackedBatches*uint64(cfg.BatchSize) || s.Entries != 0 {
						t.Errorf("unacked %d batches, %d entries; acked %d entries", s.UnackedBatches, s.UnackedEntries, s.Entries)
					}
				})
			}
		}
	}
	if _, err := Run(context.Background(), Config{Addr: addrs["silent"], Duration: time.Second, Grace: -time.Second}); err == nil {
		t.Error("negative grace accepted")
	}
}
