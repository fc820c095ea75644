package icebergcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

// PropTombstones is the mirror table property listing its tombstone files
// (docs/mirror.md: Parquet files of row_id, event_ms, source_id, entry_seq).
const PropTombstones = "lakehouse.mirror.tombstones"

// ReadTombstones reads the tombstone files a mirror table lists with
// arrow-go's Parquet reader: the newest deleted version per key.
func ReadTombstones(ctx context.Context, tbl *table.Table) (map[string]mirrormodel.Version, error) {
	out := map[string]mirrormodel.Version{}
	raw, ok := tbl.Properties()[PropTombstones]
	if !ok {
		return out, nil
	}
	var files []struct {
		Path  string `json:"path"`
		Count int    `json:"count"`
	}
	if err := json.Unmarshal([]byte(raw), &files); err != nil {
		return nil, fmt.Errorf("icebergcheck: property %s: %w", PropTombstones, err)
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		n := 0
		err := readParquet(ctx, fs, f.Path, func(rec arrow.RecordBatch, _ int64) error {
			keys, ok1 := rec.Column(0).(*array.String)
			ms, ok2 := rec.Column(1).(*array.Int64)
			srcs, ok3 := rec.Column(2).(*array.String)
			seqs, ok4 := rec.Column(3).(*array.Int64)
			if rec.NumCols() != 4 || !ok1 || !ok2 || !ok3 || !ok4 {
				return fmt.Errorf("tombstone file %s: columns %s", f.Path, rec.Schema())
			}
			for i := range keys.Len() {
				v := mirrormodel.Version{EventTimeMs: ms.Value(i), SourceID: srcs.Value(i), EntrySeq: uint64(seqs.Value(i))}
				if old, ok := out[keys.Value(i)]; !ok || v.Compare(old) > 0 {
					out[keys.Value(i)] = v
				}
				n++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if n != f.Count {
			return nil, fmt.Errorf("icebergcheck: tombstone file %s holds %d keys, the property says %d", f.Path, n, f.Count)
		}
	}
	return out, nil
}

// DiffTombstones lists the disagreements between a mirror's tombstones
// (ReadTombstones) and the model's: a key deleted in the model must have
// its tombstone at the delete's version (unless the writer's retention
// forgot it, which a run shorter than the retention rules out), and a live
// key's tombstone, if any, must be older than its row.
func DiffTombstones(got map[string]mirrormodel.Version, m *mirrormodel.Model, tableName string) []string {
	var diffs []string
	rows, want := m.Rows(tableName), m.Tombstones(tableName)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			diffs = append(diffs, fmt.Sprintf("key %s: tombstone %+v (present %v), model's delete %+v", k, g, ok, want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if r, ok := rows[k]; ok && got[k].Compare(r.Version) >= 0 {
			diffs = append(diffs, fmt.Sprintf("key %s: tombstone %+v not older than the live row %+v", k, got[k], r.Version))
		}
	}
	return diffs
}
