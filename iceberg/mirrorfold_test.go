package iceberg

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
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
		mp := foldMirror(tbl, have, nil)
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
		if mp.len() != len(want) {
			t.Fatalf("round %d: %d winners, want %d", round, mp.len(), len(want))
		}
		for _, ch := range mp.all() {
			w, ok := want[ch.key]
			if !ok {
				t.Fatalf("round %d: unexpected key %q", round, ch.key)
			}
			if ch.order() != w.order() || ch.op != w.op || ch.after != w.after {
				t.Fatalf("round %d key %s: got %+v after %q, want %+v after %q", round, ch.key, ch, ch.after, w, w.after)
			}
		}
		// A part lives until its commit, beside the other stages' parts:
		// it holds its winners' bytes, not every row id of the flush.
		var keyBytes, afterBytes int
		for k, w := range want {
			keyBytes += len(k)
			afterBytes += len(w.after)
		}
		if len(mp.keys) != keyBytes || len(mp.afters) != afterBytes {
			t.Fatalf("round %d: the part holds %d bytes of keys and %d of afters, want its winners' %d and %d",
				round, len(mp.keys), len(mp.afters), keyBytes, afterBytes)
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
	p1 := partOf(mirrorChange{key: "a", eventMs: 5, source: "s"}, mirrorChange{key: "b", eventMs: 1, source: "s"})
	p2 := partOf(mirrorChange{key: "a", eventMs: 3, source: "s"}, mirrorChange{key: "b", eventMs: 1, source: "t"}, mirrorChange{key: "c", eventMs: 1})
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
	// The winners come with their own op and `after`, from either part.
	p1 = partOf(mirrorChange{key: "a", eventMs: 5, source: "s", op: codec.OpUpdate, after: `{"a":1}`},
		mirrorChange{key: "b", eventMs: 1, source: "s", op: codec.OpUpdate, after: `{"b":1}`})
	p2 = partOf(mirrorChange{key: "b", eventMs: 2, source: "t", op: codec.OpDelete},
		mirrorChange{key: "a", eventMs: 4, source: "t", op: codec.OpInsert, after: `{"a":2}`})
	var all []string
	for _, ch := range mergeMirrorParts([]*mirrorPart{p1, p2}) {
		all = append(all, fmt.Sprintf("%s %s %v %q", ch.key, ch.source, ch.op, ch.after))
	}
	slices.Sort(all)
	if want := fmt.Sprintf("[a s %v %q b t %v %q]", codec.OpUpdate, `{"a":1}`, codec.OpDelete, ""); fmt.Sprint(all) != want {
		t.Fatalf("got %v, want %s", all, want)
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
		if mp := foldMirror(tbl, nil, nil); mp.len() != 50_000 {
			b.Fatalf("%d winners", mp.len())
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
	if _, ok := s.stageMirrorTables["t"]; !ok {
		t.Fatal("the mirror's watermarks are not cached")
	}
	loads := s.CatalogTotals().Loads
	st2, err := s.Stage(ctx, f2)
	if err != nil || s.CatalogTotals().Loads != loads {
		t.Fatalf("second stage: %v, %d catalog loads: the watermarks were read again", err, s.CatalogTotals().Loads-loads)
	}
	s.cfg.BeforeMirrorCommit = func(string) error { return errCrash }
	if _, err := s.CommitStaged(ctx, []sink.Staged{st1, st2}, sink.CommitInfo{ID: 1}); !errors.Is(err, errCrash) {
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

// partOf is a part of the given changes (one per key).
func partOf(changes ...mirrorChange) *mirrorPart {
	var b partBuilder
	for _, ch := range changes {
		b.add(ch)
	}
	mp := &mirrorPart{spans: map[string]span{}}
	b.finish(mp)
	return mp
}

// all materializes every change of p.
func (p *mirrorPart) all() []mirrorChange {
	out := make([]mirrorChange, p.len())
	for i := range out {
		out[i] = p.change(i)
	}
	return out
}

// TestStagedChangeHasNoPointers: a staged part's changes hold no pointers,
// so the GC never scans them however many are staged (a string, slice, map
// or pointer field added back would make every GC cycle walk them all).
func TestStagedChangeHasNoPointers(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		switch ty.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		case reflect.Array:
			walk(ty.Elem(), path+"[]")
		case reflect.Struct:
			for i := range ty.NumField() {
				walk(ty.Field(i).Type, path+"."+ty.Field(i).Name)
			}
		default:
			t.Errorf("stagedChange%s is a %s: it holds a pointer the GC must scan", path, ty.Kind())
		}
	}
	walk(reflect.TypeFor[stagedChange](), "")
	if got := reflect.TypeOf(mirrorPart{}.changes).Elem(); got != reflect.TypeFor[stagedChange]() {
		t.Errorf("mirrorPart.changes holds %v, not stagedChange", got)
	}
}

// BenchmarkStagedMirrorGC measures the CPU a full garbage collection takes
// while 2,000,000 folded changes are staged (20 parts of 100,000 new keys,
// as direct mode holds them from stage to commit):
//
//	go test ./iceberg -run '^$' -bench StagedMirrorGC -benchtime 10x
func BenchmarkStagedMirrorGC(b *testing.B) {
	const parts, perPart = 20, 100_000
	staged := make([]*mirrorPart, 0, parts)
	for p := range parts {
		tbl := &sink.Table{Name: "t"}
		for i := range perPart {
			e := codec.Entry{Sequence: uint64(i + 1), Timestamp: uint64(1_700_000_000_000 + i), Op: codec.OpInsert,
				RowID: fmt.Appendf(nil, "row-%d-%d", p, i), After: fmt.Appendf(nil, `{"id":%d,"name":"n%d"}`, i, i)}
			tbl.Rows = append(tbl.Rows, sink.Row{SourceID: "s", BatchSeq: uint64(p*perPart + i + 1), Entry: e})
		}
		staged = append(staged, foldMirror(tbl, nil, nil))
	}
	runtime.GC()
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		runtime.GC()
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/gc")
	runtime.KeepAlive(staged)
}
