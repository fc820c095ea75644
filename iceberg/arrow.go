package iceberg

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/pace"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// Field ids of the changelog schema. They are stable: never renumber them.
const (
	fieldSourceID   = 1
	fieldShardName  = 2
	fieldBatchSeq   = 3
	fieldEntrySeq   = 4
	fieldOp         = 5
	fieldEventTime  = 6
	fieldRowID      = 7
	fieldBefore     = 8
	fieldAfter      = 9
	fieldIngestTime = 10
)

// Column indexes in the Arrow records (field id - 1).
const (
	colSourceID = iota
	colShardName
	colBatchSeq
	colEntrySeq
	colOp
	colEventTime
	colRowID
	colBefore
	colAfter
	colIngestTime
	numCols
)

// ChangelogSchema returns the Iceberg schema of every CDC table.
func ChangelogSchema() *iceberg.Schema {
	str, long, tstz := iceberg.PrimitiveTypes.String, iceberg.PrimitiveTypes.Int64, iceberg.PrimitiveTypes.TimestampTz
	return iceberg.NewSchema(0,
		iceberg.NestedField{ID: fieldSourceID, Name: "source_id", Type: str, Required: true, Doc: "the source (sourceDoId) that sent the entry"},
		iceberg.NestedField{ID: fieldShardName, Name: "shard_name", Type: str, Doc: "the source's shard name, when known"},
		iceberg.NestedField{ID: fieldBatchSeq, Name: "batch_seq", Type: long, Required: true, Doc: "the server's batch sequence of the source"},
		iceberg.NestedField{ID: fieldEntrySeq, Name: "entry_seq", Type: long, Required: true, Doc: "the entry's sequence within the source"},
		iceberg.NestedField{ID: fieldOp, Name: "op", Type: str, Required: true, Doc: "INSERT, UPDATE or DELETE"},
		iceberg.NestedField{ID: fieldEventTime, Name: "event_time", Type: tstz, Required: true, Doc: "the entry's timestamp"},
		iceberg.NestedField{ID: fieldRowID, Name: "row_id", Type: str, Required: true},
		iceberg.NestedField{ID: fieldBefore, Name: "before", Type: str, Doc: "the row before the change, JSON text as sent"},
		iceberg.NestedField{ID: fieldAfter, Name: "after", Type: str, Doc: "the row after the change, JSON text as sent"},
		iceberg.NestedField{ID: fieldIngestTime, Name: "ingest_time", Type: tstz, Required: true, Doc: "the flush time"},
	)
}

// changelogSpec is day(event_time).
func changelogSpec(sc *iceberg.Schema) (iceberg.PartitionSpec, error) {
	spec, err := iceberg.NewPartitionSpecOpts(
		iceberg.AddPartitionFieldBySourceID(fieldEventTime, "event_time_day", iceberg.DayTransform{}, sc, nil))
	if err != nil {
		return spec, fmt.Errorf("iceberg: partition spec: %w", err)
	}
	return spec, nil
}

// changelogSortOrder is source_id, entry_seq ascending.
func changelogSortOrder() (table.SortOrder, error) {
	so, err := table.NewSortOrder(1, []table.SortField{
		{SourceIDs: []int{fieldSourceID}, Transform: iceberg.IdentityTransform{}, Direction: table.SortASC, NullOrder: table.NullsFirst},
		{SourceIDs: []int{fieldEntrySeq}, Transform: iceberg.IdentityTransform{}, Direction: table.SortASC, NullOrder: table.NullsFirst},
	})
	if err != nil {
		return so, fmt.Errorf("iceberg: sort order: %w", err)
	}
	return so, nil
}

// changelogArrowSchema is the Arrow schema of the records the sink appends,
// with Iceberg field ids in the field metadata.
func changelogArrowSchema() (*arrow.Schema, error) {
	sc, err := table.SchemaToArrowSchema(ChangelogSchema(), nil, true, false)
	if err != nil {
		return nil, fmt.Errorf("iceberg: arrow schema: %w", err)
	}
	return sc, nil
}

// sortRows orders the rows to write by (source_id, entry_seq), then batch
// sequence, keeping arrival order for ties.
func sortRows(rows []*sink.Row) {
	if slices.IsSortedFunc(rows, compareRows) {
		return
	}
	slices.SortStableFunc(rows, compareRows)
}

func compareRows(a, b *sink.Row) int {
	if c := cmp.Compare(a.SourceID, b.SourceID); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Sequence, b.Sequence); c != 0 {
		return c
	}
	return cmp.Compare(a.BatchSeq, b.BatchSeq)
}

// buildRecord builds one Arrow record of rows (already filtered and sorted),
// straight from the entries' byte slices: each column's buffers are sized
// once and filled with one copy per value; no per-row maps, no JSON
// decoding. ingestMicros is the flush time in microseconds since the epoch.
// pacer (nil: none) yields to ingest within and between the string columns.
func buildRecord(sc *arrow.Schema, rows []*sink.Row, ingestMicros int64, pacer *pace.Pacer) (arrow.RecordBatch, error) {
	if sc.NumFields() != numCols {
		return nil, fmt.Errorf("iceberg: arrow schema has %d fields, want %d", sc.NumFields(), numCols)
	}
	n := len(rows)
	tsUnit := arrow.Microsecond
	if tt, ok := sc.Field(colEventTime).Type.(*arrow.TimestampType); ok {
		tsUnit = tt.Unit
	}
	scale := int64(1)
	if tsUnit == arrow.Nanosecond {
		scale = 1000
	}

	cols := make([]arrow.Array, numCols)
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	var err error
	str := func(col int, nullable bool, get func(*sink.Row) []byte) {
		if err == nil {
			cols[col], err = stringColumn(sc.Field(col).Type, rows, nullable, get, pacer)
			pacer.Yield()
		}
	}
	str(colSourceID, false, func(r *sink.Row) []byte { return unsafeBytes(r.SourceID) })
	str(colShardName, true, func(r *sink.Row) []byte {
		if r.ShardName == "" {
			return nil
		}
		return unsafeBytes(r.ShardName)
	})
	str(colOp, false, func(r *sink.Row) []byte { return opBytes(r.Op) })
	str(colRowID, false, func(r *sink.Row) []byte { return r.RowID })
	str(colBefore, true, func(r *sink.Row) []byte { return r.Before })
	str(colAfter, true, func(r *sink.Row) []byte { return r.After })
	if err != nil {
		return nil, err
	}

	batchSeq := make([]int64, n)
	entrySeq := make([]int64, n)
	eventTime := make([]arrow.Timestamp, n)
	ingest := make([]arrow.Timestamp, n)
	ingestTS := arrow.Timestamp(ingestMicros * scale)
	for i, r := range rows {
		batchSeq[i] = int64(r.BatchSeq)
		entrySeq[i] = int64(r.Sequence)
		eventTime[i] = arrow.Timestamp(int64(r.Timestamp) * 1000 * scale) // ms -> µs (or ns)
		ingest[i] = ingestTS
	}
	cols[colBatchSeq] = fixedColumn(sc.Field(colBatchSeq).Type, n, arrow.Int64Traits.CastToBytes(batchSeq))
	cols[colEntrySeq] = fixedColumn(sc.Field(colEntrySeq).Type, n, arrow.Int64Traits.CastToBytes(entrySeq))
	cols[colEventTime] = fixedColumn(sc.Field(colEventTime).Type, n, arrow.TimestampTraits.CastToBytes(eventTime))
	cols[colIngestTime] = fixedColumn(sc.Field(colIngestTime).Type, n, arrow.TimestampTraits.CastToBytes(ingest))
	return array.NewRecordBatch(sc, cols, int64(n)), nil
}

// stringRowsPerYield is how many values stringColumn copies between two
// calls to its pacer: a row-image column of a stage's take (75,000 rows of
// W1) is several milliseconds of copying.
const stringRowsPerYield = 4096

// stringColumn builds a string column; get returns nil for a null value
// (only when nullable).
func stringColumn(dt arrow.DataType, rows []*sink.Row, nullable bool, get func(*sink.Row) []byte, pacer *pace.Pacer) (arrow.Array, error) {
	n := len(rows)
	total := 0
	for _, r := range rows {
		total += len(get(r))
	}
	if total > math.MaxInt32 {
		return nil, fmt.Errorf("iceberg: %d bytes in one string column exceed the 2 GiB Arrow limit", total)
	}
	offsets := make([]int32, n+1)
	data := make([]byte, 0, total)
	var valid []byte
	nulls := 0
	if nullable {
		valid = make([]byte, bitutil.BytesForBits(int64(n)))
	}
	for i, r := range rows {
		v := get(r)
		if nullable {
			if v == nil {
				nulls++
			} else {
				bitutil.SetBit(valid, i)
			}
		}
		data = append(data, v...)
		offsets[i+1] = int32(len(data))
		if i%stringRowsPerYield == stringRowsPerYield-1 {
			pacer.Yield()
		}
	}
	var validBuf *memory.Buffer
	if nulls > 0 {
		validBuf = memory.NewBufferBytes(valid)
	}
	d := array.NewData(dt, n, []*memory.Buffer{validBuf,
		memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets)), memory.NewBufferBytes(data)}, nil, nulls, 0)
	defer d.Release()
	return array.MakeFromData(d), nil
}

// fixedColumn wraps a filled fixed-width value buffer with no nulls.
func fixedColumn(dt arrow.DataType, n int, values []byte) arrow.Array {
	d := array.NewData(dt, n, []*memory.Buffer{nil, memory.NewBufferBytes(values)}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

var opNames = [...][]byte{codec.OpInsert: []byte("INSERT"), codec.OpUpdate: []byte("UPDATE"), codec.OpDelete: []byte("DELETE")}

func opBytes(op codec.Op) []byte {
	if int(op) < len(opNames) {
		return opNames[op]
	}
	return []byte(op.String())
}

// unsafeBytes views s as bytes without copying; the result is only read.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
