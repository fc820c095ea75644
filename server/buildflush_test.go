package server

import (
	"cmp"
	"slices"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// w1Batches is n buffered W1 batches of 1,000 entries of one source.
func w1Batches(tb testing.TB, n int) []*bufBatch {
	tb.Helper()
	src := &source{id: "bench-src"}
	out := make([]*bufBatch, n)
	for i := range out {
		b := &codec.Batch{Sequence: uint64(i + 1), SourceID: []byte(src.id), Entries: workload.Entries(int64(i)*1000, 1000)}
		frame, err := codec.EncodeBatch(b)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = &bufBatch{src: src, seq: uint64(i + 1), frame: frame, entries: 1000, lastEntry: uint64((i + 1) * 1000)}
	}
	return out
}

// TestBuildFlushGroupsByTable: every entry lands in its table, in arrival
// order, with its batch's identity and the flush's watermark.
func TestBuildFlushGroupsByTable(t *testing.T) {
	batches := w1Batches(t, 3)
	f, err := buildFlush(7, 0, time.Now(), batches)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tables) != 8 {
		t.Fatalf("%d tables, want the 8 of W1", len(f.Tables))
	}
	total := 0
	for _, tb := range f.Tables {
		total += len(tb.Rows)
		for i, r := range tb.Rows {
			if string(r.Table) != tb.Name || r.SourceID != "bench-src" {
				t.Fatalf("table %s row %d: %+v", tb.Name, i, r)
			}
			if i > 0 && r.Sequence <= tb.Rows[i-1].Sequence {
				t.Fatalf("table %s: rows out of arrival order at %d", tb.Name, i)
			}
			if want := (r.Sequence-1)/1000 + 1; r.BatchSeq != want {
				t.Fatalf("table %s row %d: batch %d, want %d", tb.Name, i, r.BatchSeq, want)
			}
		}
		if cap(tb.Rows) != len(tb.Rows) {
			t.Errorf("table %s: %d rows in a slice of capacity %d: sized up front, it needs no growth", tb.Name, len(tb.Rows), cap(tb.Rows))
		}
	}
	if total != 3000 {
		t.Errorf("%d rows, want 3000", total)
	}
	if w := f.Watermarks["bench-src"]; w.BatchSeq != 3 || w.EntrySeq != 3000 {
		t.Errorf("watermark %+v", w)
	}
}

// TestBuildFlushSourceBySource: the buffer interleaves sources, and each
// table's rows come out source by source (in id order), each source's rows
// by batch then entry: the order the Iceberg sink writes, so that it has no
// rows to sort.
func TestBuildFlushSourceBySource(t *testing.T) {
	a, b := &source{id: "a"}, &source{id: "b"}
	var batches []*bufBatch
	for i := range 4 {
		// b's batches first: arrival order is not id order.
		for _, src := range []*source{b, a} {
			seq := uint64(i + 1)
			frame, err := codec.EncodeBatch(&codec.Batch{Sequence: seq, SourceID: []byte(src.id), Entries: workload.Entries(int64(i)*100, 100)})
			if err != nil {
				t.Fatal(err)
			}
			batches = append(batches, &bufBatch{src: src, seq: seq, frame: frame, entries: 100, lastEntry: seq * 100})
		}
	}
	arrival := slices.Clone(batches)
	f, err := buildFlush(1, 0, time.Now(), batches)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(batches, arrival) {
		t.Error("buildFlush reordered the caller's batches")
	}
	for _, tb := range f.Tables {
		if len(tb.Rows) != 2*4*100/8 {
			t.Fatalf("table %s: %d rows, want 100", tb.Name, len(tb.Rows))
		}
		for i := 1; i < len(tb.Rows); i++ {
			p, r := &tb.Rows[i-1], &tb.Rows[i]
			if c := cmp.Or(cmp.Compare(p.SourceID, r.SourceID), cmp.Compare(p.Sequence, r.Sequence)); c >= 0 {
				t.Fatalf("table %s: row %d (%s, entry %d) after (%s, entry %d): not by (source, entry sequence)",
					tb.Name, i, r.SourceID, r.Sequence, p.SourceID, p.Sequence)
			}
		}
	}
}

// BenchmarkBuildFlush groups 200 W1 batches (200,000 entries) by table.
func BenchmarkBuildFlush(b *testing.B) {
	batches := w1Batches(b, 200)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildFlush(1, 0, time.Now(), batches); err != nil {
			b.Fatal(err)
		}
	}
}
