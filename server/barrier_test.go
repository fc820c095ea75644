package server_test

import (
	"fmt"
	"testing"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestStreamFlushIsABarrier sends a batch and a flush back to back, without
// waiting for the ack, as grpcurl does with its input: the flush must cover
// the batch, and its status come after the batch's ack and its persisted
// watermark. Appends are fsync'd, so a flush that did not wait for the
// batch would run before the batch reaches the buffer.
func TestStreamFlushIsABarrier(t *testing.T) {
	in := servertest.Start(t, servertest.WithSync())
	cc := in.Dial()
	for round := range 5 {
		src := fmt.Sprintf("barrier-%d", round)
		ts := openStream(t, cc, src, 0)
		for _, req := range []*lakehousev1.StreamRequest{
			{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: mustEncode(t, smallBatch(src, 1, 3))}},
			{Kind: &lakehousev1.StreamRequest_Flush{Flush: &lakehousev1.FlushRequest{}}},
		} {
			if err := ts.st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		var acked, persisted bool
		for {
			r, err := ts.st.Recv()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			switch {
			case r.GetAck() != nil:
				if r.GetAck().GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
					t.Fatalf("round %d: ack %v", round, r.GetAck())
				}
				acked = true
			case r.GetPersisted() != nil:
				persisted = persisted || r.GetPersisted().GetSequenceNumber() == 1
			case r.GetStatus() != nil:
				lf := r.GetStatus().GetLastFlush()
				if !acked || !persisted || !lf.GetSuccess() || lf.GetEntriesFlushed() < 3 {
					t.Fatalf("round %d: flush status after ack=%v persisted=%v, flush %v: the flush overtook the batch",
						round, acked, persisted, lf)
				}
			default:
				t.Fatalf("round %d: unexpected %v", round, r)
			}
			if r.GetStatus() != nil {
				break
			}
		}
	}
}
