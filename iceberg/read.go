package iceberg

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// Record is one changelog row as read back from a table.
type Record struct {
	SourceID   string    `json:"source_id"`
	ShardName  string    `json:"shard_name,omitempty"` // "" when null
	BatchSeq   uint64    `json:"batch_seq"`
	EntrySeq   uint64    `json:"entry_seq"`
	Op         string    `json:"op"`
	EventTime  time.Time `json:"event_time"`
	RowID      string    `json:"row_id"`
	Before     *string   `json:"before,omitempty"` // JSON text as sent; nil when null
	After      *string   `json:"after,omitempty"`  // JSON text as sent; nil when null
	IngestTime time.Time `json:"ingest_time"`
}

// TableInfo describes one CDC table of the namespace.
type TableInfo struct {
	Name         string                    `json:"name"`          // the Iceberg table name (sanitised)
	OriginalName string                    `json:"original_name"` // the CDC table name as sent
	Location     string                    `json:"location"`
	Rows         int64                     `json:"rows"`      // total records of the current snapshot
	Files        int64                     `json:"files"`     // data files of the current snapshot
	Snapshots    int                       `json:"snapshots"` // snapshots kept in the metadata
	Watermarks   map[string]sink.Watermark `json:"watermarks"`
}

// Tables lists the CDC tables of the namespace, sorted by name.
func (s *Sink) Tables(ctx context.Context) ([]TableInfo, error) {
	out := []TableInfo{}
	err := s.eachTable(ctx, func(ident table.Identifier, tbl *table.Table, wm map[string]sink.Watermark) error {
		info := TableInfo{
			Name:         catalog.TableNameFromIdent(ident),
			OriginalName: tbl.Properties()[PropOriginalName],
			Location:     tbl.Location(),
			Snapshots:    len(tbl.Metadata().Snapshots()),
			Watermarks:   wm,
		}
		if snap := tbl.CurrentSnapshot(); snap != nil && snap.Summary != nil {
			info.Rows, _ = strconv.ParseInt(snap.Summary.Properties["total-records"], 10, 64)
			info.Files, _ = strconv.ParseInt(snap.Summary.Properties["total-data-files"], 10, 64)
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LoadTable loads a CDC table by original or sanitised name, with the
// sink's FileIO wrapper applied.
func (s *Sink) LoadTable(ctx context.Context, name string) (*table.Table, error) {
	ident := s.Identifier(name)
	tbl, err := s.cat.LoadTable(ctx, ident)
	if err != nil {
		return nil, fmt.Errorf("iceberg: load table %s: %w", strings.Join(ident, "."), err)
	}
	return s.wrap(tbl), nil
}

// ScanArrow reads a table's current snapshot as an Arrow table, at most
// limit rows when limit > 0. The caller releases the result.
func (s *Sink) ScanArrow(ctx context.Context, name string, limit int) (arrow.Table, error) {
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		return nil, err
	}
	var opts []table.ScanOption
	if limit > 0 {
		opts = append(opts, table.WithLimit(int64(limit)))
	}
	at, err := tbl.Scan(opts...).ToArrowTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("iceberg: scan %s: %w", name, err)
	}
	return at, nil
}

// Scan reads a table's rows (at most limit when limit > 0), ordered by
// source and entry sequence.
func (s *Sink) Scan(ctx context.Context, name string, limit int) ([]Record, error) {
	at, err := s.ScanArrow(ctx, name, limit)
	if err != nil {
		return nil, err
	}
	defer at.Release()
	recs, err := RecordsFromArrow(at)
	if err != nil {
		return nil, fmt.Errorf("iceberg: scan %s: %w", name, err)
	}
	slices.SortStableFunc(recs, func(a, b Record) int {
		if c := cmp.Compare(a.SourceID, b.SourceID); c != 0 {
			return c
		}
		return cmp.Compare(a.EntrySeq, b.EntrySeq)
	})
	return recs, nil
}

// RecordsFromArrow converts an Arrow table of the changelog schema to
// records.
func RecordsFromArrow(at arrow.Table) ([]Record, error) {
	out := make([]Record, 0, at.NumRows())
	tr := array.NewTableReader(at, 0)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		col := func(name string) (arrow.Array, error) {
			idx := rec.Schema().FieldIndices(name)
			if len(idx) == 0 {
				return nil, fmt.Errorf("column %q missing", name)
			}
			return rec.Column(idx[0]), nil
		}
		var cols [numCols]arrow.Array
		for i, name := range []string{"source_id", "shard_name", "batch_seq", "entry_seq", "op", "event_time", "row_id", "before", "after", "ingest_time"} {
			c, err := col(name)
			if err != nil {
				return nil, err
			}
			cols[i] = c
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			var r Record
			var err error
			r.SourceID, _, err = strAt(cols[colSourceID], i)
			if err == nil {
				r.ShardName, _, err = strAt(cols[colShardName], i)
			}
			if err == nil {
				r.Op, _, err = strAt(cols[colOp], i)
			}
			if err == nil {
				r.RowID, _, err = strAt(cols[colRowID], i)
			}
			if err == nil {
				r.Before, err = optStrAt(cols[colBefore], i)
			}
			if err == nil {
				r.After, err = optStrAt(cols[colAfter], i)
			}
			if err == nil {
				r.BatchSeq, err = uintAt(cols[colBatchSeq], i)
			}
			if err == nil {
				r.EntrySeq, err = uintAt(cols[colEntrySeq], i)
			}
			if err == nil {
				r.EventTime, err = timeAt(cols[colEventTime], i)
			}
			if err == nil {
				r.IngestTime, err = timeAt(cols[colIngestTime], i)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	if err := tr.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func strAt(a arrow.Array, i int) (string, bool, error) {
	if a.IsNull(i) {
		return "", false, nil
	}
	switch c := a.(type) {
	case *array.String:
		return c.Value(i), true, nil
	case *array.LargeString:
		return c.Value(i), true, nil
	case *array.StringView:
		return c.Value(i), true, nil
	}
	return "", false, fmt.Errorf("unexpected string column type %s", a.DataType())
}

func optStrAt(a arrow.Array, i int) (*string, error) {
	s, ok, err := strAt(a, i)
	if err != nil || !ok {
		return nil, err
	}
	return &s, nil
}

func uintAt(a arrow.Array, i int) (uint64, error) {
	c, ok := a.(*array.Int64)
	if !ok {
		return 0, fmt.Errorf("unexpected long column type %s", a.DataType())
	}
	return uint64(c.Value(i)), nil
}

func timeAt(a arrow.Array, i int) (time.Time, error) {
	c, ok := a.(*array.Timestamp)
	if !ok {
		return time.Time{}, fmt.Errorf("unexpected timestamp column type %s", a.DataType())
	}
	unit := c.DataType().(*arrow.TimestampType).Unit
	return c.Value(i).ToTime(unit).UTC(), nil
}
