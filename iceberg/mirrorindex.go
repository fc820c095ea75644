package iceberg

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// mirrorIndex is the order of each key's current change in one mirror
// table, deletes included (tombstones). It is loaded from the table's live
// rows and its tombstone files (mirrortombstone.go) on first use.
//
// An entry is 24 bytes (the source id is interned to a small number); in
// the pointer-free key table (mirrorkeys.go), with its hash map, a key
// costs about 80 bytes plus its length (BenchmarkMirrorIndexMemory: 92
// bytes per key of 10 characters).
type mirrorIndex struct {
	entries    keyTable
	sources    []string          // interned source ids, by number
	sourceNums map[string]uint32 // source id -> number
	maxEventMs uint64            // the newest event time applied
	tombstones int               // entries that are deletes
	files      []tombstoneFile   // the table's tombstone files (its property)
	// snapshot is the table snapshot the index reflects (0: none): the
	// one it was loaded from, then each of its mirror commits'. A commit
	// reloads the index when the table has another writer's snapshot
	// since (dropForeignIndex), so the index holds every key with a row.
	snapshot int64

	reportedKeys, reportedTombstones int // as counted in MirrorTotals
}

type indexEntry struct {
	eventMs uint64
	entry   uint64
	source  uint32
	deleted bool
}

func newMirrorIndex() *mirrorIndex {
	return &mirrorIndex{entries: newKeyTable(), sourceNums: make(map[string]uint32)}
}

// get returns the order of key's current change.
func (x *mirrorIndex) get(key string) (orderKey, bool) {
	e, ok := x.entries.get(key)
	if !ok {
		return orderKey{}, false
	}
	return orderKey{eventMs: e.eventMs, source: x.sources[e.source], entry: e.entry}, true
}

// set records o as key's current change, unless the index holds a newer one.
func (x *mirrorIndex) set(key string, o orderKey, deleted bool) {
	if cur, ok := x.get(key); ok && compareOrder(o, cur) <= 0 {
		return
	}
	n, ok := x.sourceNums[o.source]
	if !ok {
		n = uint32(len(x.sources))
		src := strings.Clone(o.source)
		x.sources = append(x.sources, src)
		x.sourceNums[src] = n
	}
	if old, had := x.entries.get(key); had && old.deleted {
		x.tombstones--
	}
	if deleted {
		x.tombstones++
	}
	x.entries.put(key, indexEntry{eventMs: o.eventMs, entry: o.entry, source: n, deleted: deleted})
	x.maxEventMs = max(x.maxEventMs, o.eventMs)
}

// forgetTombstones drops the tombstones older than cutoffMs.
func (x *mirrorIndex) forgetTombstones(cutoffMs uint64) int {
	n := x.entries.forget(func(e indexEntry) bool { return e.deleted && e.eventMs < cutoffMs })
	x.tombstones -= n
	return n
}

// mirrorIndexFor returns the table's index, loading it from the table's
// rows and tombstone files on first use.
func (s *Sink) mirrorIndexFor(ctx context.Context, name string, tbl *table.Table) (*mirrorIndex, error) {
	san := sink.SanitizeName(name)
	if idx, ok := s.mirror.index(san); ok {
		return idx, nil
	}
	idx := newMirrorIndex()
	if _, pinned := s.cfg.MirrorSchemas[name]; pinned {
		s.pinnedAdds(tbl, s.mirrorPin(name), true) // warns once per load about a table that differs
	}
	if snap := tbl.CurrentSnapshot(); snap != nil {
		idx.snapshot = snap.SnapshotID
		keyCol := mirrorKeyColumn(tbl)
		_, it, err := tbl.Scan(table.WithSelectedFields(keyCol, mirrorColSourceID, mirrorColEntrySeq, mirrorColEventTime)).
			ToArrowRecords(ctx)
		if err != nil {
			return nil, fmt.Errorf("mirror: load index: %w", err)
		}
		for rec, err := range it {
			if err != nil {
				return nil, fmt.Errorf("mirror: load index: %w", err)
			}
			err := indexRecord(idx, rec, keyCol)
			rec.Release()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := s.loadTombstones(ctx, tbl, idx); err != nil {
		return nil, err
	}
	s.mirror.setIndex(san, idx)
	s.reportIndex(idx, false)
	return idx, nil
}

// mirrorKeyColumn is the name of the table's key column (field 1).
func mirrorKeyColumn(tbl *table.Table) string {
	if f, ok := tbl.Schema().FindFieldByID(mirrorFieldRowID); ok {
		return f.Name
	}
	return mirrorColRowID
}

func indexRecord(idx *mirrorIndex, rec arrow.RecordBatch, keyCol string) error {
	keys, ok1 := columnByName(rec, keyCol).(*array.String)
	srcs, ok2 := columnByName(rec, mirrorColSourceID).(*array.String)
	seqs, ok3 := columnByName(rec, mirrorColEntrySeq).(*array.Int64)
	tss, ok4 := columnByName(rec, mirrorColEventTime).(*array.Timestamp)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return errors.New("mirror: load index: unexpected system column types")
	}
	for i := 0; i < keys.Len(); i++ {
		idx.set(keys.Value(i), orderKey{eventMs: uint64(tss.Value(i)) / 1000, source: srcs.Value(i), entry: uint64(seqs.Value(i))}, false)
	}
	return nil
}

func columnByName(rec arrow.RecordBatch, name string) arrow.Array {
	if i := fieldIndex(rec.Schema(), name); i >= 0 {
		return rec.Column(i)
	}
	return nil
}
