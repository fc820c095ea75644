package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server"
)

// TestServeAcceptsLargeBatches sends batches far above gRPC's default 4 MiB
// message limit to `lakehouse serve`: one just under the 16 MiB batch limit
// is acked, one just over it is nacked invalid_format on a stream that
// stays usable.
func TestServeAcceptsLargeBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	startProc(t, addr, filepath.Join(dir, "server.log"), "serve", "--data-dir", filepath.Join(dir, "data"),
		"--grpc-addr", addr, "--http-addr", "", "--sink", "jsonl", "--log-level", "warn")
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		server.GRPCCallLimits())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "big"}}})
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	// batch builds a frame of about size bytes from 1 MiB row images.
	batch := func(seq uint64, size int) []byte {
		img := []byte(`"` + strings.Repeat("x", 1<<20-2) + `"`)
		b := &codec.Batch{Sequence: seq, SourceID: []byte("big")}
		for i := 0; len(b.Entries)*(1<<20) < size; i++ {
			// Entry sequences of batch seq start at seq*1000: they
			// increase across the batches of a source.
			b.Entries = append(b.Entries, codec.Entry{Sequence: seq*1000 + uint64(i+1), Timestamp: 1764547200000,
				Table: []byte("blobs"), RowID: []byte("r"), After: img})
		}
		f, err := codec.EncodeBatch(b)
		if err != nil {
			// Over the codec's own 16 MiB limit: write the frame by hand.
			b.Entries = b.Entries[:len(b.Entries)-1]
			f, _ = codec.EncodeBatch(b)
			f = append(f, make([]byte, size-len(f))...)
		}
		return f
	}
	// exact builds a frame of exactly size bytes.
	exact := func(seq uint64, size int) []byte {
		f := batch(seq, size-(1<<20))
		b, err := codec.DecodeBatch(f, codec.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b = b.Clone()
		pad := size - len(f) - 29 - len("blobs") - len("r") - 2
		b.Entries = append(b.Entries, codec.Entry{Sequence: b.LastEntrySequence() + 1, Timestamp: 1764547200000, Table: []byte("blobs"), RowID: []byte("r"),
			After: []byte(`"` + strings.Repeat("y", pad) + `"`)})
		if f, err = codec.EncodeBatch(b); err != nil || len(f) != size {
			t.Fatalf("exact frame: %d bytes, %v", len(f), err)
		}
		return f
	}
	// structured is a structured batch of about size bytes.
	structured := func(seq uint64, size int) *lakehousev1.StreamRequest {
		pb := &lakehousev1.Batch{SequenceNumber: seq}
		img := `"` + strings.Repeat("z", 1<<20) + `"`
		for i := 0; i*(1<<20) < size; i++ {
			pb.Entries = append(pb.Entries, &lakehousev1.Entry{Sequence: seq*1000 + uint64(i+1), TimestampMs: 1764547200000,
				Operation: lakehousev1.Operation_OPERATION_INSERT, Table: "blobs", RowId: "r", After: img})
		}
		return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: pb}}
	}
	binary := func(f []byte) *lakehousev1.StreamRequest {
		return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}
	}
	tests := []struct {
		name string
		req  *lakehousev1.StreamRequest
		ok   bool
	}{
		{"15 MiB", binary(batch(1, 15<<20)), true},
		{"16.5 MiB", binary(batch(2, 16<<20+1<<19)), false},
		// The largest frame the protocol allows fits in the write-ahead log.
		{"exactly 16 MiB", binary(exact(2, codec.MaxMessageSize)), true},
		// Above the old 17 MiB receive limit, which ended the stream.
		{"24 MiB structured", structured(3, 24<<20), false},
		{"after the oversized ones", binary(batch(3, 1<<20)), true},
	}
	for _, tc := range tests {
		if err := st.Send(tc.req); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.ok && r.GetAck().GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
			t.Errorf("%s: got %v, want an ok ack", tc.name, r)
		}
		if !tc.ok && r.GetNack().GetReason() != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT {
			t.Errorf("%s: got %v, want an invalid_format nack", tc.name, r)
		}
	}
}
