package server_test

import (
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

const ts0 = 1764547200000 // 2025-12-01

func ins(seq uint64, table, row string) *lakehousev1.Entry {
	return &lakehousev1.Entry{Sequence: seq, TimestampMs: ts0 + int64(seq), Operation: lakehousev1.Operation_OPERATION_INSERT,
		Table: table, RowId: row, After: `{"id":1}`}
}

// TestInputRulesNative sends batches that break one input rule each over a
// native (batch-sequenced) stream: each is nacked invalid_format naming the
// entry and the field, nothing of it is stored, and the stream goes on.
func TestInputRulesNative(t *testing.T) {
	with := func(f func(e *lakehousev1.Entry)) *lakehousev1.Entry {
		e := ins(2, "users", "u2")
		f(e)
		return e
	}
	tests := []struct {
		name    string
		entries []*lakehousev1.Entry
		want    string // in the nack message
	}{
		{"repeated sequence", []*lakehousev1.Entry{ins(2, "users", "a"), ins(2, "users", "b")}, "entries[1].sequence"},
		{"out of order", []*lakehousev1.Entry{ins(3, "users", "a"), ins(2, "users", "b")}, "entries[1].sequence"},
		{"not after the previous batch", []*lakehousev1.Entry{ins(1, "users", "a")}, "entries[0].sequence 1 is not above the source's last accepted entry sequence 1"},
		{"empty table", []*lakehousev1.Entry{ins(2, "users", "a"), ins(3, "", "b")}, "entries[1].table"},
		{"empty row id", []*lakehousev1.Entry{ins(2, "users", "")}, "entries[0].row_id"},
		{"insert without after", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.After = "" })}, "entries[0].after"},
		{"insert with before", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.Before = "{}" })}, "entries[0].before"},
		{"update without before", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.Operation = lakehousev1.Operation_OPERATION_UPDATE })}, "entries[0].before"},
		{"delete without before", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) {
			e.Operation, e.After = lakehousev1.Operation_OPERATION_DELETE, ""
		})}, "entries[0].before"},
		{"delete with after", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) {
			e.Operation, e.Before = lakehousev1.Operation_OPERATION_DELETE, "{}"
		})}, "entries[0].after"},
		{"timestamp 0", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.TimestampMs = 0 })}, "entries[0].timestamp_ms 0"},
		{"negative timestamp", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.TimestampMs = -5 })}, "entries[0].timestamp_ms -5"},
		{"invalid JSON", []*lakehousev1.Entry{ins(2, "users", "a"), with(func(e *lakehousev1.Entry) { e.After = "{not json" })}, "entries[1].after is not valid JSON"},
		{"year 10000", []*lakehousev1.Entry{with(func(e *lakehousev1.Entry) { e.TimestampMs = 253402300800000 })}, "entries[0].timestamp_ms"},
	}
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "rules", 0)
	send := func(seq uint64, es []*lakehousev1.Entry) *lakehousev1.StreamResponse {
		t.Helper()
		if err := ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: &lakehousev1.Batch{
			SequenceNumber: seq, CorrelationId: "c", Entries: es}}}); err != nil {
			t.Fatal(err)
		}
		return ts.recv()
	}
	if a := send(1, []*lakehousev1.Entry{ins(1, "users", "u1")}).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("valid batch 1 not acked: %v", a)
	}
	for _, tc := range tests {
		r := send(2, tc.entries)
		n := r.GetNack()
		if n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || n.ShouldRetry || !strings.Contains(n.ErrorMessage, tc.want) {
			t.Errorf("%s: got %v, want an invalid_format nack containing %q", tc.name, r, tc.want)
		}
	}
	// The stream is alive and batch 2 is still expected.
	if a := send(2, []*lakehousev1.Entry{ins(2, "users", "u2")}).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("valid batch 2 not acked: %v", a)
	}
	if _, err := in.Server.FlushNow(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if recs := in.Records(); len(recs) != 2 {
		t.Fatalf("sink holds %d rows, want the 2 valid ones: %+v", len(recs), recs)
	}
}

// TestInputRulesLegacy checks what entry-sequenced (legacy) sources may
// still send, as the original protocol allows: row images absent whatever
// the operation (falsy values are written as absent), and repeated entry
// sequences, which are dropped as duplicates. An empty table or an insane
// timestamp is refused on this path too.
func TestInputRulesLegacy(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "legacy-rules", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	e := func(seq uint64, op codec.Op, table string) codec.Entry {
		return codec.Entry{Sequence: seq, Timestamp: ts0 + seq, Op: op, Table: []byte(table), RowID: []byte("r")}
	}
	ok := &codec.Batch{Sequence: 1, SourceID: []byte("legacy-rules"), Entries: []codec.Entry{
		e(1, codec.OpInsert, "t"), e(2, codec.OpUpdate, "t"), e(2, codec.OpUpdate, "t"), e(3, codec.OpDelete, "t"),
	}}
	if a := ts.sendFrame(ok).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK || a.GetDetails().GetEntriesAccepted() != 3 ||
		a.GetDetails().GetLastEntrySequence() != 3 {
		t.Fatalf("legacy batch with absent images and a repeated sequence: %v (want 3 accepted, last entry 3)", a)
	}
	bad := []struct {
		entry codec.Entry
		want  string
	}{
		{e(4, codec.OpInsert, ""), "entries[0].table"},
		{codec.Entry{Sequence: 5, Timestamp: 0, Table: []byte("t")}, "entries[0].timestamp_ms"},
		{codec.Entry{Sequence: 6, Timestamp: ts0, Table: []byte("t"), After: []byte("{bad")}, "invalid JSON: entries[0].after"},
	}
	for i, b := range bad {
		r := ts.sendFrame(&codec.Batch{Sequence: uint64(2 + i), SourceID: []byte("legacy-rules"), Entries: []codec.Entry{b.entry}})
		if n := r.GetNack(); n.GetReason() != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || !strings.Contains(n.GetErrorMessage(), b.want) {
			t.Errorf("legacy %s: got %v", b.want, r)
		}
	}
}
