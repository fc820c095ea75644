package iceberg

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"

	"github.com/dot-do/lakehouse-rpc/internal/pace"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// A stage writes a table's sorted rows straight from the flush's entries
// into Parquet's column writers, one column after the other: no Arrow
// record in between. Building one (buildRecord) copied every row image
// into a column buffer once more, about 5% of the server's CPU at 100,000
// W1 entries/s, and held the copy, and the row group's compressed pages,
// in memory until the file was written. The files are those pqarrow
// writes from the same record (the same Parquet schema, the same stored
// Arrow schema, pages and statistics: TestRowWriterMatchesArrowWriter).
// Anything else (several partitions, a table whose columns are not the
// changelog's) goes through an Arrow record as before.

// rowSchema returns the Parquet schema and key-value metadata pqarrow
// writes for target's Arrow schema (pqarrow.NewFileWriter with
// WithStoreSchema). The schema is the sink's own (writeRowsOnePartition),
// whose columns writeColumn fills by position.
func (t *fileTarget) rowSchema() (*schema.Schema, metadata.KeyValueMetadata, error) {
	arrowProps := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	sc, err := pqarrow.ToParquet(t.arrowSchema, t.props, arrowProps)
	if err != nil {
		return nil, nil, err
	}
	if sc.NumColumns() != numCols {
		return nil, nil, fmt.Errorf("iceberg: parquet schema has %d columns, want %d", sc.NumColumns(), numCols)
	}
	meta := make(metadata.KeyValueMetadata, 0, t.arrowSchema.Metadata().Len()+1)
	for i, k := range t.arrowSchema.Metadata().Keys() {
		meta.Append(k, t.arrowSchema.Metadata().Values()[i])
	}
	meta.Append("ARROW:schema", base64.StdEncoding.EncodeToString(flight.SerializeSchema(t.arrowSchema, memory.DefaultAllocator)))
	return sc, meta, nil
}

// writeRowsOnePartition writes a stage's rows, sorted and all of one
// partition, into new files in dir, the partition's directory, straight
// from the entries. ok is false, and nothing is written, when the table's
// columns are not the sink's schema (evolved elsewhere) or its properties
// cannot be mapped
// (newFileTarget): the caller then writes an Arrow record
// (writeOnePartition, or iceberg-go's writer, which reports what this one
// refused).
func (s *Sink) writeRowsOnePartition(ctx context.Context, tbl *table.Table, dir string, rows []*sink.Row, ingestMicros int64) (files []iceberg.DataFile, ok bool, err error) {
	targetBytes := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, s.cfg.TargetFileSizeBytes)
	target, err := newFileTarget(ctx, tbl, dir, targetBytes, s.stagedPageCap())
	if err != nil || !target.arrowSchema.Equal(s.schema) {
		return nil, false, nil
	}
	files, err = writeRowFiles(ctx, target, rows, ingestMicros)
	return files, true, err
}

// writeRowFiles writes rows, sorted and all of one partition, into new
// files of target, closing a file at the target size, and returns their
// manifest entries (unpartitioned, claiming no order: the caller binds
// them, viewEntry). target's columns are the sink's schema. On error the
// files written so far are removed.
func writeRowFiles(ctx context.Context, target *fileTarget, rows []*sink.Row, ingestMicros int64) (files []iceberg.DataFile, err error) {
	sc, meta, err := target.rowSchema()
	if err != nil {
		return nil, err
	}
	var w *rowFile
	defer func() {
		if err == nil {
			return
		}
		if w != nil {
			w.abort()
		}
		target.removeAll(files)
		files = nil
	}()
	prefix := uuid.NewString()
	for len(rows) > 0 {
		if err := ctx.Err(); err != nil {
			return files, context.Cause(ctx)
		}
		if w == nil {
			if w, err = target.createRowFile(target.filePath(prefix, len(files)), sc, meta); err != nil {
				return files, err
			}
		}
		n := rowGroupRows(rows, target.props.MaxRowGroupLength(), target.rowGroupBytes)
		if err := w.writeRowGroup(rows[:n], ingestMicros); err != nil {
			return files, err
		}
		rows = rows[n:]
		if w.count.n >= target.targetBytes || len(rows) == 0 {
			df, err := w.close()
			w = nil
			if err != nil {
				return files, err
			}
			files = append(files, df)
		}
	}
	return files, nil
}

// rowGroupRows returns how many of rows (at least one) go into the next
// row group: at most maxRows, and no more than maxBytes of values. The
// bytes are counted before encoding and compression, so a row group is
// never larger than the table's row group size, as pqarrow's would be
// (it compares the compressed bytes), only sometimes smaller.
func rowGroupRows(rows []*sink.Row, maxRows, maxBytes int64) int {
	var bytes int64
	for i, r := range rows {
		if int64(i) >= maxRows {
			return i
		}
		bytes += int64(len(r.SourceID)+len(r.ShardName)+len(r.RowID)+len(r.Before)+len(r.After)) + 8*4 + 6
		if bytes > maxBytes && i > 0 {
			return i
		}
	}
	return len(rows)
}

// rowFile is a data file being written by writeRowFiles.
type rowFile struct {
	target *fileTarget
	path   string
	count  *countingWriter
	fw     *file.Writer
	pacer  pace.Pacer
	// Scratch, reused from column to column.
	vals []parquet.ByteArray
	defs []int16
	ints []int64
}

func (t *fileTarget) createRowFile(path string, sc *schema.Schema, meta metadata.KeyValueMetadata) (*rowFile, error) {
	out, err := t.fs.Create(path)
	if err != nil {
		return nil, err
	}
	// Buffered: column by column, each page and page header is a write of
	// its own, and a local file's writes are system calls.
	f := &rowFile{target: t, path: path, count: &countingWriter{w: &bufferedFile{Writer: bufio.NewWriterSize(out, rowFileBuffer), out: out}}}
	f.fw, err = file.NewParquetWriterWithError(f.count, sc.Root(), file.WithWriterProps(t.props), file.WithWriteMetadata(meta))
	if err != nil {
		f.abort()
		return nil, err
	}
	return f, nil
}

// writeRowGroup writes rows as one row group, column by column: a
// column's pages go to the file as they fill, and only the statistics stay
// behind for the footer.
func (f *rowFile) writeRowGroup(rows []*sink.Row, ingestMicros int64) error {
	rg, err := f.fw.AppendRowGroupChecked()
	if err != nil {
		return err
	}
	for col := range numCols {
		cw, err := rg.NextColumn()
		if err != nil {
			return err
		}
		if err := f.writeColumn(cw, col, rows, ingestMicros); err != nil {
			return fmt.Errorf("column %s: %w", f.target.arrowSchema.Field(col).Name, err)
		}
	}
	return rg.Close()
}

// writeColumn writes column col of rows, in slices of writeSlice rows (as
// openFile.write hands records to pqarrow, so that the pages are the
// same), pacing between them.
func (f *rowFile) writeColumn(cw file.ColumnChunkWriter, col int, rows []*sink.Row, ingestMicros int64) error {
	slice := int(writeSlice(f.target.props.WriteBatchSize()))
	for off := 0; off < len(rows); off += slice {
		part := rows[off:min(off+slice, len(rows))]
		var err error
		switch col {
		case colSourceID:
			err = f.writeStrings(cw, part, false, func(r *sink.Row) []byte { return unsafeBytes(r.SourceID) })
		case colShardName:
			err = f.writeStrings(cw, part, true, func(r *sink.Row) []byte {
				if r.ShardName == "" {
					return nil
				}
				return unsafeBytes(r.ShardName)
			})
		case colOp:
			err = f.writeStrings(cw, part, false, func(r *sink.Row) []byte { return opBytes(r.Op) })
		case colRowID:
			err = f.writeStrings(cw, part, false, func(r *sink.Row) []byte { return r.RowID })
		case colBefore:
			err = f.writeStrings(cw, part, true, func(r *sink.Row) []byte { return r.Before })
		case colAfter:
			err = f.writeStrings(cw, part, true, func(r *sink.Row) []byte { return r.After })
		case colBatchSeq:
			err = f.writeInts(cw, part, func(r *sink.Row) int64 { return int64(r.BatchSeq) })
		case colEntrySeq:
			err = f.writeInts(cw, part, func(r *sink.Row) int64 { return int64(r.Sequence) })
		case colEventTime:
			err = f.writeInts(cw, part, func(r *sink.Row) int64 { return int64(r.Timestamp) * 1000 }) // ms -> µs
		case colIngestTime:
			err = f.writeInts(cw, part, func(*sink.Row) int64 { return ingestMicros })
		}
		if err != nil {
			return err
		}
		f.pacer.Yield()
	}
	return nil
}

// writeStrings writes a string column; get returns nil for a null value
// (only when nullable). The values are the entries' own bytes, not copies.
func (f *rowFile) writeStrings(cw file.ColumnChunkWriter, rows []*sink.Row, nullable bool, get func(*sink.Row) []byte) error {
	w, ok := cw.(*file.ByteArrayColumnChunkWriter)
	if !ok {
		return fmt.Errorf("%T is not a byte array column writer", cw)
	}
	f.vals, f.defs = f.vals[:0], f.defs[:0]
	for _, r := range rows {
		v := get(r)
		if nullable {
			if v == nil {
				f.defs = append(f.defs, 0)
				continue
			}
			f.defs = append(f.defs, 1)
		}
		f.vals = append(f.vals, v)
	}
	var defs []int16
	if nullable {
		defs = f.defs
	}
	_, err := w.WriteBatch(f.vals, defs, nil)
	clear(f.vals) // no reference to the entries' bytes outlives the write
	return err
}

// writeInts writes a required 64-bit integer column.
func (f *rowFile) writeInts(cw file.ColumnChunkWriter, rows []*sink.Row, get func(*sink.Row) int64) error {
	w, ok := cw.(*file.Int64ColumnChunkWriter)
	if !ok {
		return fmt.Errorf("%T is not an int64 column writer", cw)
	}
	f.ints = f.ints[:0]
	for _, r := range rows {
		f.ints = append(f.ints, get(r))
	}
	_, err := w.WriteBatch(f.ints, nil, nil)
	return err
}

// close finishes the file and returns its manifest entry.
func (f *rowFile) close() (iceberg.DataFile, error) {
	if err := f.fw.Close(); err != nil { // closes f.count's writer, even on error
		_ = f.target.fs.Remove(f.path)
		return nil, fmt.Errorf("write %s: %w", f.path, err)
	}
	fm, err := f.fw.FileMetadata()
	if err != nil {
		_ = f.target.fs.Remove(f.path)
		return nil, err
	}
	return f.target.dataFile(f.path, fm, f.count.n)
}

// rowFileBuffer is the write buffer of a file the row writer writes.
const rowFileBuffer = 256 << 10

// bufferedFile is a file written through a buffer, flushed on Close.
type bufferedFile struct {
	*bufio.Writer
	out io.WriteCloser
}

func (b *bufferedFile) Close() error {
	return errors.Join(b.Flush(), b.out.Close())
}

// abort closes and removes a file that will not be used.
func (f *rowFile) abort() {
	_ = f.count.Close()
	_ = f.target.fs.Remove(f.path)
}
