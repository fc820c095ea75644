package icebergcheck

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

func TestDiffMirror(t *testing.T) {
	ts := time.UnixMilli(1700000000123).UTC()
	model := map[string]mirrormodel.Row{
		"k1": {After: []byte(`{"n":5,"x":1.5,"s":"a","b":true,"t":"2023-11-14T22:13:20.123Z","o":{"c":"z","d":null},"l":[1,2]}`), Op: codec.OpUpdate,
			Version: mirrormodel.Version{EventTimeMs: 1700000000123, SourceID: "src", EntrySeq: 7}},
		"k2": {After: []byte(`{"n":"five"}`), Op: codec.OpInsert, Version: mirrormodel.Version{EventTimeMs: 1700000000123, SourceID: "src", EntrySeq: 8}},
		"k3": {After: []byte(`{}`), Op: codec.OpInsert, Version: mirrormodel.Version{EventTimeMs: 1, SourceID: "s", EntrySeq: 1}},
	}
	good := func() []Row {
		return []Row{
			{"row_id": "k1", "_source_id": "src", "_entry_seq": int64(7), "_event_time": ts, "_op": "UPDATE", "_extra": nil,
				"n": int64(5), "x": 1.5, "s": "a", "b": true, "t": ts, "o": map[string]any{"c": "z", "d": nil}, "l": []any{int64(1), int64(2)}},
			// k2 does not fit: the whole after in _extra, typed column null.
			{"row_id": "k2", "_source_id": "src", "_entry_seq": int64(8), "_event_time": ts, "_op": "INSERT", "_extra": `{"n": "five"}`, "n": nil},
			{"row_id": "k3", "_source_id": "s", "_entry_seq": int64(1), "_event_time": time.UnixMilli(1), "_op": "INSERT", "n": nil, "o": nil},
		}
	}
	if d := DiffMirror(good(), model); len(d) != 0 {
		t.Fatalf("a matching mirror reports:\n%s", strings.Join(d, "\n"))
	}
	// Nested values kept as JSON text match too.
	rows := good()
	rows[0]["o"], rows[0]["l"] = `{"c":"z"}`, `[1, 2]`
	if d := DiffMirror(rows, model); len(d) != 0 {
		t.Fatalf("JSON text columns report:\n%s", strings.Join(d, "\n"))
	}
	// An integer in a double column (the writer stores it when exact).
	rows = good()
	rows[0]["n"] = 5.0
	if d := DiffMirror(rows, model); len(d) != 0 {
		t.Fatalf("an integer in a double column reports:\n%s", strings.Join(d, "\n"))
	}

	for _, tc := range []struct {
		name   string
		change func([]Row) []Row
		want   string
	}{
		{"missing", func(r []Row) []Row { return r[1:] }, "key k1: missing (model: UPDATE by src entry 7"},
		{"extra", func(r []Row) []Row { return append(r, Row{"row_id": "k9", "n": int64(1)}) }, "key k9: extra row"},
		{"duplicate", func(r []Row) []Row { return append(r, r[2]) }, "key k3: duplicate rows"},
		{"value", func(r []Row) []Row { r[0]["n"] = int64(6); return r }, "key k1: column n: want long 5, got long 6"},
		{"type long as string", func(r []Row) []Row { r[0]["n"] = "5"; return r }, `key k1: column n: want long 5, got string "5"`},
		{"type long as another double", func(r []Row) []Row { r[0]["n"] = 5.5; return r }, "key k1: column n: want long 5, got double 5.5"},
		{"double", func(r []Row) []Row { r[0]["x"] = 1.25; return r }, "key k1: column x: want double 1.5, got double 1.25"},
		{"timestamp", func(r []Row) []Row { r[0]["t"] = ts.Add(time.Millisecond); return r }, "key k1: column t: want string"},
		{"struct field", func(r []Row) []Row { r[0]["o"] = map[string]any{"c": "y"}; return r }, `key k1: column o: .c: want string "z", got string "y"`},
		{"struct extra field", func(r []Row) []Row { r[0]["o"] = map[string]any{"c": "z", "e": int64(1)}; return r }, "key k1: column o: .e: want null (absent)"},
		{"list", func(r []Row) []Row { r[0]["l"] = []any{int64(1)}; return r }, "key k1: column l: want list [1 2], got list [1]"},
		{"dropped field", func(r []Row) []Row { delete(r[0], "b"); return r }, "key k1: field b of after (boolean true) has no column and _extra is null"},
		{"column not in after", func(r []Row) []Row { r[2]["n"] = int64(3); return r }, "key k3: column n: want null (not in after), got long 3"},
		{"extra text", func(r []Row) []Row { r[1]["_extra"] = `{"n":"six"}`; return r }, `key k2: _extra: JSON text differs`},
		{"extra and a wrong typed value", func(r []Row) []Row { r[1]["n"] = "six"; return r }, `key k2: column n: want string "five", got string "six"`},
		{"source", func(r []Row) []Row { r[0]["_source_id"] = "other"; return r }, `key k1: _source_id: want string "src", got string "other"`},
		{"entry seq", func(r []Row) []Row { r[0]["_entry_seq"] = int64(6); return r }, "key k1: _entry_seq: want long 7, got long 6"},
		{"op", func(r []Row) []Row { r[0]["_op"] = "INSERT"; return r }, `key k1: _op: want string "UPDATE"`},
		{"event time", func(r []Row) []Row { r[0]["_event_time"] = ts.Add(time.Second); return r }, "key k1: _event_time: want 2023-11-14T22:13:20.123Z"},
	} {
		d := DiffMirror(tc.change(good()), model)
		if len(d) != 1 || !strings.HasPrefix(d[0], tc.want) {
			t.Errorf("%s: differences\n  %s\nwant one starting %q", tc.name, strings.Join(d, "\n  "), tc.want)
		}
	}
}

// TestCompareMirrorReports checks that CompareMirror fails the test and
// names the difference.
func TestCompareMirrorReports(t *testing.T) {
	ft := &fakeT{}
	CompareMirror(ft, "cdc_current.users", nil, map[string]mirrormodel.Row{"k": {After: []byte(`{}`)}})
	if !strings.Contains(ft.msg, "mirror cdc_current.users differs from the model (0 rows, model 1): 1 differences") || !strings.Contains(ft.msg, "key k: missing") {
		t.Fatalf("report: %q", ft.msg)
	}
}

type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.msg += strings.TrimSpace(strings.ReplaceAll(sprintf(format, args...), "\n", " | "))
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestDiffMirrorKey: with a pinned key column, the row id is read from it,
// the column is not compared as a typed value, and a member of the after
// named like it must hold the row id unless the row is in _extra.
func TestDiffMirrorKey(t *testing.T) {
	v := mirrormodel.Version{EventTimeMs: 1, SourceID: "s", EntrySeq: 1}
	model := map[string]mirrormodel.Row{
		"42": {After: []byte(`{"pk":42,"n":1}`), Op: codec.OpInsert, Version: v},
		"43": {After: []byte(`{"pk":"x"}`), Op: codec.OpInsert, Version: v},
	}
	row := func(id string, extra any) Row {
		return Row{"pk": id, "_source_id": "s", "_entry_seq": int64(1), "_event_time": time.UnixMilli(1), "_op": "INSERT", "_extra": extra, "n": nil}
	}
	r42 := row("42", nil)
	r42["n"] = int64(1)
	if d := DiffMirrorKey([]Row{r42, row("43", `{"pk":"x"}`)}, model, "pk"); len(d) != 0 {
		t.Fatalf("matching rows report:\n%s", strings.Join(d, "\n"))
	}
	d := DiffMirrorKey([]Row{r42, row("43", nil)}, model, "pk")
	if len(d) != 1 || !strings.HasPrefix(d[0], `key 43: field pk of after (string "x") is not the row id "43"`) {
		t.Errorf("a wrong key member: %v", d)
	}
	if d := DiffMirror([]Row{r42}, model); !strings.Contains(strings.Join(d, "\n"), "row without a string row_id") {
		t.Errorf("row_id expected by DiffMirror: %v", d)
	}
}

// TestDiffTombstones: tombstones must match the model's deletes, and be
// older than live rows.
func TestDiffTombstones(t *testing.T) {
	m := mirrormodel.New()
	v := func(ms int64) mirrormodel.Version {
		return mirrormodel.Version{EventTimeMs: ms, SourceID: "s", EntrySeq: uint64(ms)}
	}
	m.Commit([]mirrormodel.Change{{Table: "t", RowID: "a", Op: codec.OpInsert, After: []byte(`{}`), Version: v(1)}})
	m.Commit([]mirrormodel.Change{{Table: "t", RowID: "a", Op: codec.OpDelete, Version: v(2)}, {Table: "t", RowID: "b", Op: codec.OpDelete, Version: v(3)}})
	m.Commit([]mirrormodel.Change{{Table: "t", RowID: "c", Op: codec.OpDelete, Version: v(4)}})
	m.Commit([]mirrormodel.Change{{Table: "t", RowID: "c", Op: codec.OpInsert, After: []byte(`{}`), Version: v(5)}})
	good := map[string]mirrormodel.Version{"a": v(2), "b": v(3), "c": v(4)}
	if d := DiffTombstones(good, m, "t"); len(d) != 0 {
		t.Fatalf("matching tombstones: %v", d)
	}
	for name, got := range map[string]map[string]mirrormodel.Version{
		"missing":        {"a": v(2), "c": v(4)},
		"older":          {"a": v(1), "b": v(3)},
		"newer than row": {"a": v(2), "b": v(3), "c": v(6)},
	} {
		if d := DiffTombstones(got, m, "t"); len(d) != 1 {
			t.Errorf("%s: %v", name, d)
		}
	}
}
