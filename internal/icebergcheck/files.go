package icebergcheck

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
)

// Field ids of a position delete file's columns (Iceberg spec).
const (
	posDeleteFilePathID = 2147483546
	posDeletePosID      = 2147483545
)

// eqDeleteSet is one equality delete file's keys.
type eqDeleteSet struct {
	ref  fileRef
	ids  []int
	keys map[string]bool
}

// read reads the data files and removes the rows the delete files delete.
func (s *snapshotFiles) read(ctx context.Context, fs iceio.IO, res *Result) error {
	sc := res.Schema
	var eqs []eqDeleteSet
	for _, d := range s.eqDeletes {
		ids := d.df.EqualityFieldIDs()
		if len(ids) == 0 {
			return fmt.Errorf("icebergcheck: equality delete file %s has no equality field ids", d.df.FilePath())
		}
		set := eqDeleteSet{ref: d, ids: ids, keys: map[string]bool{}}
		err := readParquet(ctx, fs, d.df.FilePath(), func(rec arrow.RecordBatch, _ int64) error {
			cols, err := columnsByID(rec, ids)
			if err != nil {
				return fmt.Errorf("equality delete file %s: %w", d.df.FilePath(), err)
			}
			for i := range int(rec.NumRows()) {
				k, err := rowKey(rec, cols, ids, sc, i)
				if err != nil {
					return err
				}
				set.keys[k] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		eqs = append(eqs, set)
	}
	// Position deletes: data file path -> positions, with the delete's
	// sequence number (they apply to data files of the same or a lower one).
	type posDel struct {
		seq int64
		pos map[int64]bool
	}
	pos := map[string][]posDel{}
	for _, d := range s.posDeletes {
		byPath := map[string]map[int64]bool{}
		err := readParquet(ctx, fs, d.df.FilePath(), func(rec arrow.RecordBatch, _ int64) error {
			cols, err := columnsByID(rec, []int{posDeleteFilePathID, posDeletePosID})
			if err != nil {
				return fmt.Errorf("position delete file %s: %w", d.df.FilePath(), err)
			}
			paths, ok1 := rec.Column(cols[0]).(*array.String)
			ps, ok2 := rec.Column(cols[1]).(*array.Int64)
			if !ok1 || !ok2 {
				return fmt.Errorf("position delete file %s: columns of types %s, %s", d.df.FilePath(), rec.Column(cols[0]).DataType(), rec.Column(cols[1]).DataType())
			}
			for i := range int(rec.NumRows()) {
				p := paths.Value(i)
				if byPath[p] == nil {
					byPath[p] = map[int64]bool{}
				}
				byPath[p][ps.Value(i)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for p, set := range byPath {
			pos[p] = append(pos[p], posDel{seq: d.seq, pos: set})
		}
	}
	res.EqualityDeleteFiles, res.PositionDeleteFiles = len(s.eqDeletes), len(s.posDeletes)
	res.MaxPartitionDeleteFiles = maxPerPartition(s.eqDeletes, s.posDeletes)

	top := sc.Fields()
	topIDs := make([]int, len(top))
	for i, f := range top {
		topIDs[i] = f.ID
	}
	for _, d := range s.data {
		res.DataFiles++
		// The deletes that apply to this file: a strictly higher data
		// sequence number, and its partition or a global (unpartitioned)
		// delete.
		var applies []*eqDeleteSet
		for i := range eqs {
			e := &eqs[i]
			if eqDeleteApplies(e.ref, d) {
				applies = append(applies, e)
			}
		}
		var posApplies []map[int64]bool
		for _, pd := range pos[d.df.FilePath()] {
			if pd.seq >= d.seq { // the same data file: no partition check
				posApplies = append(posApplies, pd.pos)
			}
		}
		err := readParquet(ctx, fs, d.df.FilePath(), func(rec arrow.RecordBatch, offset int64) error {
			cols := optionalColumnsByID(rec, topIDs)
			eqCols := make([][]int, len(applies))
			for j, e := range applies {
				c, err := columnsByID(rec, e.ids)
				if err != nil {
					return fmt.Errorf("data file %s: %w", d.df.FilePath(), err)
				}
				eqCols[j] = c
			}
		rows:
			for i := range int(rec.NumRows()) {
				for _, p := range posApplies {
					if p[offset+int64(i)] {
						res.DeletedRows++
						continue rows
					}
				}
				for j, e := range applies {
					k, err := rowKey(rec, eqCols[j], e.ids, sc, i)
					if err != nil {
						return err
					}
					if e.keys[k] {
						res.DeletedRows++
						continue rows
					}
				}
				row := make(Row, len(top))
				for c, f := range top {
					if cols[c] < 0 {
						row[f.Name] = nil // a column added after the file was written
						continue
					}
					v, err := value(rec.Column(cols[c]), i, f.Type)
					if err != nil {
						return fmt.Errorf("data file %s, column %s: %w", d.df.FilePath(), f.Name, err)
					}
					row[f.Name] = v
				}
				res.Rows = append(res.Rows, row)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eqDeleteApplies reports whether an equality delete file applies to a data
// file (Iceberg spec, "Scan Planning"): the data file's data sequence number
// is strictly lower, and the delete is in the data file's partition (same
// spec and values) or its spec is unpartitioned. So an update survives the
// equality delete of its own commit.
func eqDeleteApplies(del, data fileRef) bool {
	return del.seq > data.seq && (del.unpartition || del.partition == data.partition)
}

// rowKey encodes row i's values of the equality fields ids.
func rowKey(rec arrow.RecordBatch, cols, ids []int, sc *iceberg.Schema, i int) (string, error) {
	vals := make([]any, len(ids))
	for j, id := range ids {
		f, ok := sc.FindFieldByID(id)
		if !ok {
			return "", fmt.Errorf("icebergcheck: equality field id %d not in the schema", id)
		}
		v, err := value(rec.Column(cols[j]), i, f.Type)
		if err != nil {
			return "", err
		}
		vals[j] = v
	}
	return encodeKey(vals), nil
}

// encodeKey encodes values so that equal values (nulls included: equality
// deletes match null to null) give equal keys.
func encodeKey(vals []any) string {
	var b strings.Builder
	for _, v := range vals {
		if t, ok := v.(time.Time); ok {
			v = t.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(&b, "%T=%v\x00", v, v)
	}
	return b.String()
}

// readParquet reads a Parquet file record by record; fn gets each record
// and the position of its first row in the file.
func readParquet(ctx context.Context, fs iceio.IO, path string, fn func(rec arrow.RecordBatch, offset int64) error) error {
	f, err := fs.Open(path)
	if err != nil {
		return fmt.Errorf("icebergcheck: open %s: %w", path, err)
	}
	defer f.Close()
	pf, err := file.NewParquetReader(f)
	if err != nil {
		return fmt.Errorf("icebergcheck: parquet %s: %w", path, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 64 << 10}, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("icebergcheck: parquet %s: %w", path, err)
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("icebergcheck: parquet %s: %w", path, err)
	}
	defer rr.Release()
	var offset int64
	for rr.Next() {
		rec := rr.RecordBatch()
		if err := fn(rec, offset); err != nil {
			return fmt.Errorf("icebergcheck: %w", err)
		}
		offset += rec.NumRows()
	}
	if err := rr.Err(); err != nil {
		return fmt.Errorf("icebergcheck: parquet %s: %w", path, err)
	}
	return nil
}

// fieldID returns the Iceberg field id of an Arrow field written by an
// Iceberg writer, -1 if it has none.
func fieldID(f arrow.Field) int {
	if v, ok := f.Metadata.GetValue("PARQUET:field_id"); ok {
		if id, err := strconv.Atoi(v); err == nil {
			return id
		}
	}
	return -1
}

// columnsByID returns the record's column index of each field id; all must
// be present.
func columnsByID(rec arrow.RecordBatch, ids []int) ([]int, error) {
	cols := optionalColumnsByID(rec, ids)
	for j, c := range cols {
		if c < 0 {
			return nil, fmt.Errorf("no column with field id %d", ids[j])
		}
	}
	return cols, nil
}

// optionalColumnsByID is columnsByID with -1 for a missing field id.
func optionalColumnsByID(rec arrow.RecordBatch, ids []int) []int {
	byID := map[int]int{}
	for i, f := range rec.Schema().Fields() {
		byID[fieldID(f)] = i
	}
	out := make([]int, len(ids))
	for j, id := range ids {
		c, ok := byID[id]
		if !ok {
			c = -1
		}
		out[j] = c
	}
	return out
}

// maxPerPartition is the largest number of delete files in one partition.
func maxPerPartition(lists ...[]fileRef) int {
	n := map[string]int{}
	most := 0
	for _, l := range lists {
		for _, f := range l {
			n[f.partition]++
			most = max(most, n[f.partition])
		}
	}
	return most
}
