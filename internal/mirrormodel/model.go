package mirrormodel

import (
	"maps"
	"slices"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Change is one CDC change as the mirror writer sees it.
type Change struct {
	Table string
	RowID string
	Op    codec.Op
	After []byte // JSON text; nil for a delete
	Version
}

// ChangeOf returns the change of entry e of source.
func ChangeOf(source string, e *codec.Entry) Change {
	return Change{
		Table:   string(e.Table),
		RowID:   string(e.RowID),
		Op:      e.Op,
		After:   e.After,
		Version: Version{EventTimeMs: int64(e.Timestamp), SourceID: source, EntrySeq: e.Sequence},
	}
}

// Row is a live row of the model: the winning insert or update of its key.
type Row struct {
	After []byte   // the JSON text of the change's after
	Op    codec.Op // OpInsert or OpUpdate
	Version
}

// Model is the expected state of the mirror tables. The zero value is not
// usable; call New. Not safe for concurrent use.
type Model struct {
	tables     map[string]map[string]Row
	tombstones map[string]map[string]Version // the winning delete per deleted key
}

// New returns an empty model.
func New() *Model {
	return &Model{tables: make(map[string]map[string]Row), tombstones: make(map[string]map[string]Version)}
}

// Commit applies one mirror commit as the contract specifies: the changes
// are folded to the winner per (table, row_id), and each winner replaces the
// row in the table unless that row, or the key's delete (its tombstone), is
// newer; a delete removes the row and leaves a tombstone. The model keeps
// tombstones forever; the writer keeps them for a retention (by event time
// behind the newest), so the two agree while no change is older than the
// newest event time minus the retention.
func (m *Model) Commit(changes []Change) {
	type key struct{ table, row string }
	winners := make(map[key]Change, len(changes))
	for _, c := range changes {
		k := key{c.Table, c.RowID}
		if w, ok := winners[k]; !ok || c.Version.Compare(w.Version) > 0 {
			winners[k] = c
		}
	}
	for k, c := range winners {
		t := m.tables[k.table]
		if t == nil {
			t = make(map[string]Row)
			m.tables[k.table] = t
		}
		if old, ok := t[k.row]; ok && old.Version.Compare(c.Version) > 0 {
			continue // an older change never replaces a newer row
		}
		ts := m.tombstones[k.table]
		if ts == nil {
			ts = make(map[string]Version)
			m.tombstones[k.table] = ts
		}
		if del, ok := ts[k.row]; ok && del.Compare(c.Version) >= 0 {
			continue // nor a newer delete
		}
		if c.Op == codec.OpDelete {
			delete(t, k.row)
			ts[k.row] = c.Version
			continue
		}
		delete(ts, k.row)
		t[k.row] = Row{After: c.After, Op: c.Op, Version: c.Version}
	}
}

// CommitBatch applies the entries of one source as one commit.
func (m *Model) CommitBatch(source string, entries []codec.Entry) {
	cs := make([]Change, len(entries))
	for i := range entries {
		cs[i] = ChangeOf(source, &entries[i])
	}
	m.Commit(cs)
}

// Tables returns the names of the tables the model has seen, sorted
// (tables whose rows were all deleted included: their mirror is empty).
func (m *Model) Tables() []string {
	return slices.Sorted(maps.Keys(m.tables))
}

// Rows returns a copy of the live rows of table by row_id.
func (m *Model) Rows(table string) map[string]Row {
	return maps.Clone(m.tables[table])
}

// Tombstones returns a copy of the deleted keys of table with the version
// of their delete.
func (m *Model) Tombstones(table string) map[string]Version {
	return maps.Clone(m.tombstones[table])
}

// Len returns the number of live rows of table.
func (m *Model) Len(table string) int { return len(m.tables[table]) }

// Equal reports whether m and o hold the same rows (same versions, ops and
// after texts).
func (m *Model) Equal(o *Model) bool {
	return m.Diff(o) == ""
}

// Diff describes the first difference between m and o ("" when equal),
// tables without rows counting as absent.
func (m *Model) Diff(o *Model) string {
	names := slices.Compact(slices.Sorted(slices.Values(append(m.Tables(), o.Tables()...))))
	for _, name := range names {
		a, b := m.tables[name], o.tables[name]
		for _, id := range slices.Sorted(maps.Keys(a)) {
			r, ok := b[id]
			if !ok {
				return name + "/" + id + ": only in the first model"
			}
			if ra := a[id]; ra.Version != r.Version || ra.Op != r.Op || string(ra.After) != string(r.After) {
				return name + "/" + id + ": rows differ"
			}
		}
		for id := range b {
			if _, ok := a[id]; !ok {
				return name + "/" + id + ": only in the second model"
			}
		}
	}
	return ""
}
