package icebergcheck

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"
)

// ScanTable reads tbl's current snapshot with iceberg-go's table scan, into
// the same rows as ReadTable, so the two can be cross-checked.
func ScanTable(ctx context.Context, tbl *table.Table) (*Result, error) {
	res := &Result{Schema: tbl.Schema()}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return res, nil
	}
	res.SnapshotID = snap.SnapshotID
	at, err := tbl.Scan(table.WithSnapshotID(snap.SnapshotID)).ToArrowTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: scan: %w", err)
	}
	defer at.Release()
	top := res.Schema.Fields()
	tr := array.NewTableReader(at, -1)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		cols := make([]int, len(top))
		for c, f := range top {
			cols[c] = columnOf(rec.Schema(), f.ID, f.Name)
		}
		for i := range int(rec.NumRows()) {
			row := make(Row, len(top))
			for c, f := range top {
				if cols[c] < 0 {
					row[f.Name] = nil
					continue
				}
				v, err := value(rec.Column(cols[c]), i, f.Type)
				if err != nil {
					return nil, fmt.Errorf("icebergcheck: scan, column %s: %w", f.Name, err)
				}
				row[f.Name] = v
			}
			res.Rows = append(res.Rows, row)
		}
	}
	if err := tr.Err(); err != nil {
		return nil, fmt.Errorf("icebergcheck: scan: %w", err)
	}
	return res, nil
}

// columnOf finds a column by field id, else by name; -1 when absent.
func columnOf(sc *arrow.Schema, id int, name string) int {
	byName := -1
	for i, f := range sc.Fields() {
		if fieldID(f) == id {
			return i
		}
		if f.Name == name {
			byName = i
		}
	}
	return byName
}
