package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// frameOfSize returns a cdc_batch frame of exactly size bytes for source,
// its entries' after images padded to fill it.
func frameOfSize(t *testing.T, source string, seq uint64, size int) []byte {
	t.Helper()
	const chunk = 1 << 20
	b := &codec.Batch{Sequence: seq, SourceID: []byte(source), CorrelationID: []byte("big")}
	for i := 0; b.EncodedSize() < size; i++ {
		e := codec.Entry{Sequence: uint64(i + 1), Timestamp: 1764547200000, Table: []byte("blobs"), RowID: []byte("r"), After: []byte(`""`)}
		room := size - b.EncodedSize() - e.EncodedSize()
		if room < 0 {
			t.Fatalf("cannot build a frame of exactly %d bytes", size)
		}
		e.After = []byte(`"` + strings.Repeat("x", min(room, chunk)) + `"`)
		b.Entries = append(b.Entries, e)
	}
	f := mustEncode(t, b)
	if len(f) != size {
		t.Fatalf("frame is %d bytes, want %d", len(f), size)
	}
	return f
}

// TestMaxSizeBatchIsAccepted sends a frame of exactly the protocol's maximum
// message size: it must be acked, not fail in the write-ahead log (whose
// record adds the source id and shard name to the frame).
func TestMaxSizeBatchIsAccepted(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "max-size", 0)
	r := ts.sendRaw(frameOfSize(t, "max-size", 1, codec.MaxMessageSize))
	if a := r.GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("batch of exactly %d bytes: got %v, want an ok ack", codec.MaxMessageSize, r)
	}
}

// TestOversizedStructuredBatchKeepsStream sends a structured batch well above
// the batch limit (beyond what the old 17 MiB gRPC receive limit let through):
// it is nacked invalid_format, and the stream's next batch is acked.
func TestOversizedStructuredBatchKeepsStream(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "oversized", 0)
	img := `"` + strings.Repeat("x", 1<<20) + `"`
	big := &lakehousev1.Batch{SequenceNumber: 1, CorrelationId: "too-big"}
	for i := range 20 {
		big.Entries = append(big.Entries, &lakehousev1.Entry{Sequence: uint64(i + 1), TimestampMs: 1764547200000,
			Operation: lakehousev1.Operation_OPERATION_INSERT, Table: "blobs", RowId: "r", After: img})
	}
	if err := ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: big}}); err != nil {
		t.Fatal(err)
	}
	r := ts.recv()
	if n := r.GetNack(); n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || n.ShouldRetry ||
		n.CorrelationId != "too-big" || !strings.Contains(n.ErrorMessage, "limit") {
		t.Fatalf("oversized structured batch: got %v, want an invalid_format nack naming the limit", r)
	}
	if a := ts.sendFrame(smallBatch("oversized", 1, 2)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatal("stream unusable after an oversized batch")
	}
}

// TestLongShardNameRefused checks the shard name's bound: the write-ahead
// log record stores it behind a 16-bit length.
func TestLongShardNameRefused(t *testing.T) {
	in := servertest.Start(t)
	st, err := lakehousev1.NewCDCServiceClient(in.Dial()).Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId: "long-shard", ShardName: strings.Repeat("s", 0x10000),
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "shard_name") {
		t.Fatalf("connect with a 64 KiB shard name: %v, want InvalidArgument naming shard_name", err)
	}
}
