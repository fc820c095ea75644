package iceberg

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	iceberg "github.com/apache/iceberg-go"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// A merge reads its inputs with arrow-go's Parquet reader itself when every
// input's columns are the table's: same names, field ids, types and
// nullability, in the same order. The sink writes its files so, and
// compaction rewrites them, so this is the common case. iceberg-go's scan,
// the fallback for any other file (written under an older schema, or by
// another engine), maps every batch onto the table's schema even when
// nothing differs (toRequestedSchema: 6% of compaction's CPU at
// saturation), reads each column on a goroutine of its own, and holds
// three decoded batches per input where this reader holds one. This reader
// also sizes each batch's string buffers from the column chunk's metadata
// (PreAllocBinaryData) instead of growing them by doubling, and streams
// column chunks instead of reading each whole (compactReadBuffer).

// compactReadBuffer bounds what a merge reads of one input's column at a
// time. Unbuffered, arrow-go reads each column chunk whole, so a merge
// holds every input's current row group, compressed: for the larger
// inputs, most of the file. Buffered, it holds at most this much per
// column of an input. Each read is a range request on object storage:
// 1 MiB keeps them few.
const compactReadBuffer = 1 << 20

// openDirectInputs opens tasks' files for a merge when every file's columns
// are those of want (the table's schema with field ids). ok is false, with
// nothing left open, when some file is not: the merge then reads through
// iceberg-go's scan.
func openDirectInputs(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask, want *arrow.Schema) (inputs []*mergeInput, stops []func(), ok bool, err error) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("compaction: open the table's IO: %w", err)
	}
	closeAll := func() {
		for _, stop := range stops {
			stop()
		}
	}
	for _, t := range tasks {
		df := t.File
		if df.FileFormat() != iceberg.ParquetFile || t.Start != 0 || t.Length != df.FileSizeBytes() {
			closeAll()
			return nil, nil, false, nil
		}
		in, stop, match, err := openDirectInput(ctx, fs, df.FilePath(), want)
		if err != nil || !match {
			closeAll()
			return nil, nil, false, err
		}
		inputs = append(inputs, in)
		stops = append(stops, stop)
	}
	return inputs, stops, true, nil
}

// openDirectInput opens one file; match is false (and nothing open) when
// its columns are not want's.
func openDirectInput(ctx context.Context, fs icebergio.IO, path string, want *arrow.Schema) (in *mergeInput, stop func(), match bool, err error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, nil, false, fmt.Errorf("compaction: open %s: %w", path, err)
	}
	fail := func(err error) (*mergeInput, func(), bool, error) {
		return nil, nil, false, errors.Join(err, f.Close())
	}
	mem := compute.GetAllocator(ctx)
	props := parquet.NewReaderProperties(mem)
	props.BufferedStreamEnabled, props.BufferSize = true, compactReadBuffer
	pr, err := file.NewParquetReader(f, file.WithReadProps(props))
	if err != nil {
		return fail(fmt.Errorf("compaction: read %s: %w", path, err))
	}
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: compactBatchRows, PreAllocBinaryData: true}, mem)
	if err != nil {
		return fail(fmt.Errorf("compaction: read %s: %w", path, err))
	}
	got, err := fr.Schema()
	if err != nil {
		return fail(fmt.Errorf("compaction: read %s: %w", path, err))
	}
	if !sameColumns(got, want) {
		return fail(nil)
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return fail(fmt.Errorf("compaction: read %s: %w", path, err))
	}
	next := func() (arrow.RecordBatch, error, bool) {
		if !rr.Next() {
			if err := rr.Err(); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err), true
			}
			return nil, nil, false
		}
		// The reader releases its batch at the next call; the merge
		// releases this one, which holds the columns.
		rec := rr.RecordBatch()
		return array.NewRecordBatch(want, rec.Columns(), rec.NumRows()), nil, true
	}
	stop = func() {
		rr.Release()
		f.Close()
	}
	return &mergeInput{next: next}, stop, true, nil
}

// sameColumns reports whether got, a file's schema as pqarrow reads it, has
// exactly want's columns.
func sameColumns(got, want *arrow.Schema) bool {
	if got.NumFields() != want.NumFields() {
		return false
	}
	for i := range want.NumFields() {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || g.Nullable != w.Nullable || !arrow.TypeEqual(g.Type, w.Type) || fieldID(g) == "" || fieldID(g) != fieldID(w) {
			return false
		}
	}
	return true
}

// fieldID returns f's Parquet field id, as pqarrow and iceberg-go both
// keep it in the field's metadata; "" when it has none.
func fieldID(f arrow.Field) string {
	id, _ := f.Metadata.GetValue(table.ArrowParquetFieldIDKey)
	return id
}
