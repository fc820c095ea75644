package iceberg

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// foldReference is foldMirror as first written: a map of winners, each
// change allocated and its `after` cloned.
func foldReference(t *sink.Table, have map[string]sink.Watermark) map[string]mirrorChange {
	out := make(map[string]mirrorChange)
	for i := range t.Rows {
		r := &t.Rows[i]
		if w, ok := have[r.SourceID]; ok && r.BatchSeq <= w.BatchSeq {
			continue
		}
		ch := mirrorChange{key: string(r.RowID), source: r.SourceID, entry: r.Sequence, eventMs: r.Timestamp, op: r.Op}
		if cur, ok := out[ch.key]; ok && compareOrder(ch.order(), cur.order()) <= 0 {
			continue
		}
		if r.Op != codec.OpDelete {
			ch.after = string(r.After)
		}
		out[ch.key] = ch
	}
	return out
}

// randomFoldTable makes rows of a few sources over a small key space, with
// clashing event times (so source and entry order decide), empty and
// missing `after` texts, and batches below a watermark.
func randomFoldTable(rng *rand.Rand, n int) (*sink.Table, map[string]sink.Watermark) {
	t := &sink.Table{Name: "t"}
	sources := []string{"a", "b", "c"}
	seq := map[string]uint64{}
	for i := range n {
		src := sources[rng.IntN(len(sources))]
		seq[src]++
		r := sink.Row{SourceID: src, BatchSeq: 1 + seq[src]/10}
		r.Sequence = seq[src]
		r.Timestamp = uint64(1000 + rng.IntN(5))
		r.RowID = fmt.Appendf(nil, "k%d", rng.IntN(n/4+1))
		r.Op = []codec.Op{codec.OpInsert, codec.OpUpdate, codec.OpDelete}[rng.IntN(3)]
		if r.Op != codec.OpDelete {
			switch rng.IntN(5) {
			case 0:
				r.After = []byte{}
			default:
				r.After = fmt.Appendf(nil, `{"i":%d}`, i)
			}
		}
		t.Rows = append(t.Rows, r)
	}
	return t, map[string]sink.Watermark{"b": {BatchSeq: 2}}
}

// TestFoldMirrorMatchesReference: the winners, their orders and `after`
// texts equal the straightforward fold's, and they are copies (the flush's
// buffers are reused after Stage).
func TestFoldMirrorMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 200 {
		tbl, have := randomFoldTable(rng, 1+rng.IntN(300))
		want := foldReference(tbl, have)
		mp := foldMirror(tbl, have)
		if mp == nil {
			if len(want) != 0 {
				t.Fatalf("round %d: nil part, want %d winners", round, len(want))
			}
			continue
		}
		for i := range tbl.Rows { // scribble over the flush's buffers
			clear(tbl.Rows[i].RowID)
			clear(tbl.Rows[i].After)
		}
		if len(mp.changes) != len(want) {
			t.Fatalf("round %d: %d winners, want %d", round, len(mp.changes), len(want))
		}
		for _, ch := range mp.changes {
			w, ok := want[ch.key]
			if !ok {
				t.Fatalf("round %d: unexpected key %q", round, ch.key)
			}
			if ch.order() != w.order() || ch.op != w.op || ch.after != w.after {
				t.Fatalf("round %d key %s: got %+v after %q, want %+v after %q", round, ch.key, ch, ch.after, w, w.after)
			}
		}
		var rows int64
		spans := map[string]span{}
		for i := range tbl.Rows {
			r := &tbl.Rows[i]
			if w, ok := have[r.SourceID]; !ok || r.BatchSeq > w.BatchSeq {
				rows++
				sp := spans[r.SourceID]
				sp.add(r.BatchSeq, r.Sequence)
				spans[r.SourceID] = sp
			}
		}
		if mp.rows != rows || !reflect.DeepEqual(mp.spans, spans) {
			t.Fatalf("round %d: rows %d spans %v, want %d %v", round, mp.rows, mp.spans, rows, spans)
		}
	}
}

// TestMergeMirrorParts: across parts the greatest order wins per key.
func TestMergeMirrorParts(t *testing.T) {
	p1 := &mirrorPart{changes: []mirrorChange{{key: "a", eventMs: 5, source: "s"}, {key: "b", eventMs: 1, source: "s"}}}
	p2 := &mirrorPart{changes: []mirrorChange{{key: "a", eventMs: 3, source: "s"}, {key: "b", eventMs: 1, source: "t"}, {key: "c", eventMs: 1}}}
	got := map[string]orderKey{}
	for _, ch := range mergeMirrorParts([]*mirrorPart{p1, p2}) {
		if _, dup := got[ch.key]; dup {
			t.Fatalf("key %s twice", ch.key)
		}
		got[ch.key] = ch.order()
	}
	want := map[string]orderKey{"a": {5, "s", 0}, "b": {1, "t", 0}, "c": {1, "", 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// BenchmarkFoldMirror folds a keyed flush of 100,000 changes over 50,000
// keys (the staging side of a mirror, run on every staged row).
func BenchmarkFoldMirror(b *testing.B) {
	rows := mirrorBenchRows(b, 100_000)
	tbl := &sink.Table{Name: "t"}
	for i, r := range rows {
		e := codec.Entry{Sequence: uint64(i + 1), Timestamp: r.eventMs, RowID: []byte(r.key), Op: r.op, After: []byte(r.after)}
		e.RowID = fmt.Appendf(nil, "k%d", i%50_000)
		tbl.Rows = append(tbl.Rows, sink.Row{SourceID: "s", BatchSeq: uint64(i/1000 + 1), Entry: e})
	}
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		if mp := foldMirror(tbl, nil); len(mp.changes) != 50_000 {
			b.Fatalf("%d winners", len(mp.changes))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(len(rows)*b.N), "cpu-ns/row")
}

// TestStageMirrorWatermarksOncePerCommit: Stage reads a mirror's watermarks
// once until the next commit; after a commit whose mirror side failed, the
// flush staged again still folds its rows for the mirror (the cache went
// with the commit), and after a successful one it folds none.
func TestStageMirrorWatermarksOncePerCommit(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	mirrorRows := func(st sink.Staged) (n int64) {
		for _, p := range st.(*staged).tables {
			if p.mirror != nil {
				n += p.mirror.rows
			}
		}
		return n
	}
	f1 := updateFlush(1, "t", []string{"a", "b"}, 1)
	f2 := updateFlush(2, "t", []string{"b", "c"}, 2)
	st1, err := s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	orig, ok := s.stageMirrorMarks["t"]
	if !ok {
		t.Fatal("the mirror's watermarks are not cached")
	}
	s.stageMirrorMarks["t"] = map[string]sink.Watermark{"src": {BatchSeq: 2}} // a second read would undo this
	if st2, err := s.Stage(ctx, f2); err != nil || mirrorRows(st2) != 0 {
		t.Fatalf("second stage: %v, %d mirror rows: the watermarks were read again", err, mirrorRows(st2))
	}
	s.stageMirrorMarks["t"] = orig
	s.cfg.BeforeMirrorCommit = func(string) error { return errCrash }
	if _, err := s.CommitStaged(ctx, []sink.Staged{st1}, sink.CommitInfo{ID: 1}); !errors.Is(err, errCrash) {
		t.Fatalf("commit: %v, want the mirror's failure", err)
	}
	s.cfg.BeforeMirrorCommit = nil
	again, err := s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	if again.StagedRows() != 0 || mirrorRows(again) != 2 {
		t.Fatalf("after the failed mirror commit: %d changelog rows, %d mirror rows staged; want 0 and 2", again.StagedRows(), mirrorRows(again))
	}
	if _, err := s.CommitStaged(ctx, []sink.Staged{again}, sink.CommitInfo{ID: 2}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stage(ctx, f1); err != nil || mirrorRows(st) != 0 {
		t.Fatalf("after the mirror commit: %v, %d mirror rows staged, want 0", err, mirrorRows(st))
	}
}
