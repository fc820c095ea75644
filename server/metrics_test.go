package server_test

import (
	"encoding/binary"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
)

// TestChecksumMismatchCounted sends a frame with a stale checksum, as legacy
// children do: it is accepted, and counted.
func TestChecksumMismatchCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Metrics = reg }))
	ts := openStream(t, in.Dial(), "crc", 0)
	good := mustEncode(t, smallBatch("crc", 1, 2))
	stale := mustEncode(t, smallBatch("crc", 2, 2))
	binary.LittleEndian.PutUint32(stale[36:], 0xdeadbeef)
	for _, f := range [][]byte{good, stale} {
		if a := ts.sendRaw(f).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
			t.Fatalf("batch not acked: %v", a)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "lakehouse_batch_checksum_mismatches_total"); err != nil || n != 1 {
		t.Fatalf("metric present %d times: %v", n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "lakehouse_batch_checksum_mismatches_total" && mf.GetMetric()[0].GetCounter().GetValue() != 1 {
			t.Fatalf("mismatches = %v, want 1", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}

// TestStructuredBatchNoChecksumMismatch: a structured batch (the server
// encodes its frame, without computing a checksum) is not counted as a
// mismatch, and its invalid JSON is still refused.
func TestStructuredBatchNoChecksumMismatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Metrics = reg }))
	ts := openStream(t, in.Dial(), "structured", 0)
	entry := func(seq uint64, after string) *lakehousev1.Entry {
		return &lakehousev1.Entry{Sequence: seq, TimestampMs: 1764547200000, Operation: lakehousev1.Operation_OPERATION_INSERT,
			Table: "users", RowId: "u1", After: after}
	}
	send := func(b *lakehousev1.Batch) *lakehousev1.StreamResponse {
		if err := ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: b}}); err != nil {
			t.Fatal(err)
		}
		return ts.recv()
	}
	if a := send(&lakehousev1.Batch{SequenceNumber: 1, Entries: []*lakehousev1.Entry{entry(1, `{"id":"u1"}`)}}).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("batch not acked: %v", a)
	}
	if n := send(&lakehousev1.Batch{SequenceNumber: 2, Entries: []*lakehousev1.Entry{entry(2, `{"id":`)}}).GetNack(); n.GetReason() != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT {
		t.Fatalf("invalid JSON not refused: %v", n)
	}
	if v := testutil.ToFloat64(counter(t, reg, "lakehouse_batch_checksum_mismatches_total")); v != 0 {
		t.Fatalf("mismatches = %v, want 0", v)
	}
}

// counter returns the metric family's single counter value as a collector
// for testutil.ToFloat64 (0 when the counter was never set).
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "copy"})
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			c.Add(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return c
}
