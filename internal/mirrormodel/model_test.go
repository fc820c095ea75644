package mirrormodel

import (
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

func ch(row string, op codec.Op, ts int64, src string, seq uint64) Change {
	c := Change{Table: "t", RowID: row, Op: op, Version: Version{ts, src, seq}}
	if op != codec.OpDelete {
		c.After = []byte(`{"v":"` + src + `"}`)
	}
	return c
}

func TestVersionOrder(t *testing.T) {
	tests := []struct {
		a, b Version
		want int
	}{
		{Version{10, "a", 1}, Version{11, "a", 0}, -1},     // event time first
		{Version{10, "b", 1}, Version{10, "a", 9}, 1},      // then source id
		{Version{10, "a", 2}, Version{10, "a", 3}, -1},     // then entry sequence
		{Version{10, "a", 2}, Version{10, "a", 2}, 0},      // equal
		{Version{10, "Z", 2}, Version{10, "a", 2}, -1},     // bytes: 'Z' < 'a'
		{Version{10, "é", 0}, Version{10, "z", 0}, 1},      // bytes: 0xc3 > 'z'
		{Version{-1, "", 0}, Version{0, "", 0}, -1},        // negative times order too
		{Version{5, "a", 1 << 63}, Version{5, "a", 1}, 1},  // unsigned sequences
		{Version{5, "ab", 0}, Version{5, "a", 1 << 60}, 1}, // longer source id after its prefix
	}
	for _, tc := range tests {
		if got := tc.a.Compare(tc.b); got != tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := tc.b.Compare(tc.a); got != -tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestCommitFoldsAndKeepsNewerRows(t *testing.T) {
	m := New()
	// One commit: two versions of k1; the later one by version wins even
	// though it comes first in the commit.
	m.Commit([]Change{ch("k1", codec.OpUpdate, 20, "b", 1), ch("k1", codec.OpInsert, 10, "a", 1), ch("k2", codec.OpInsert, 10, "a", 2)})
	if r := m.Rows("t")["k1"]; r.SourceID != "b" || r.Op != codec.OpUpdate {
		t.Fatalf("k1 = %+v, want the update of b", r)
	}
	// An older update and an older delete do not replace a newer row.
	m.Commit([]Change{ch("k1", codec.OpUpdate, 15, "c", 1)})
	m.Commit([]Change{ch("k1", codec.OpDelete, 19, "c", 2)})
	if r := m.Rows("t")["k1"]; r.SourceID != "b" {
		t.Fatalf("k1 = %+v after older changes, want b's row", r)
	}
	// A newer delete removes it; the delete wins its commit over an older
	// insert of the same key.
	m.Commit([]Change{ch("k1", codec.OpDelete, 30, "a", 3), ch("k1", codec.OpInsert, 29, "c", 3)})
	if _, ok := m.Rows("t")["k1"]; ok || m.Len("t") != 1 {
		t.Fatalf("k1 still live after a newer delete: %v", m.Rows("t"))
	}
	// A change older than the delete, in a later commit, does not bring
	// the row back (tombstones); a newer one does.
	m.Commit([]Change{ch("k1", codec.OpInsert, 1, "z", 1)})
	if r, ok := m.Rows("t")["k1"]; ok {
		t.Fatalf("k1 = %+v: a change older than the delete resurrected the row", r)
	}
	m.Commit([]Change{ch("k1", codec.OpInsert, 31, "z", 2)})
	if r, ok := m.Rows("t")["k1"]; !ok || r.SourceID != "z" {
		t.Fatalf("k1 = %+v, %v: an insert newer than the delete applies", r, ok)
	}
	// A delete of an absent key changes nothing; equal versions (a replay)
	// leave the row as it is.
	m.Commit([]Change{ch("k9", codec.OpDelete, 100, "a", 1)})
	m.Commit([]Change{ch("k2", codec.OpInsert, 10, "a", 2)})
	if m.Len("t") != 2 || m.Tables()[0] != "t" {
		t.Fatalf("rows %v", m.Rows("t"))
	}
}

func TestCommitBatchAndDiff(t *testing.T) {
	a, b := New(), New()
	es := []codec.Entry{
		{Sequence: 1, Timestamp: 5, Op: codec.OpInsert, Table: []byte("t"), RowID: []byte("k"), After: []byte(`{}`)},
		{Sequence: 2, Timestamp: 5, Op: codec.OpUpdate, Table: []byte("t"), RowID: []byte("k"), After: []byte(`{"x":1}`)},
	}
	a.CommitBatch("s", es)
	for i := range es {
		b.CommitBatch("s", es[i:i+1])
	}
	if d := a.Diff(b); d != "" {
		t.Fatal(d)
	}
	if r := a.Rows("t")["k"]; string(r.After) != `{"x":1}` || r.EntrySeq != 2 || r.Op != codec.OpUpdate {
		t.Fatalf("row %+v", r)
	}
	b.Commit([]Change{ch("k", codec.OpUpdate, 6, "s", 3)})
	if a.Equal(b) || a.Diff(b) != "t/k: rows differ" {
		t.Fatalf("diff %q", a.Diff(b))
	}
	a.Rows("t")["x"] = Row{} // Rows returns a copy
	if a.Len("t") != 1 {
		t.Fatal("Rows exposes the model's map")
	}
}
