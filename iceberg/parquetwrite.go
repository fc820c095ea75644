package iceberg

import (
	"context"
	"fmt"
	"io"
	"iter"
	"maps"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	iceberg "github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"

	"github.com/dot-do/lakehouse-rpc/internal/pace"
)

// Compaction writes one partition's sorted Arrow records here (and a stage
// its rows when the row writer cannot, stagewrite.go), on the caller's
// goroutine, instead of through table.WriteRecords, which runs two
// goroutines of its own per write (a clustered writer that pulls the
// records and a rolling writer behind a channel), needs a write view per
// write (writeview.go) and can lose a write error (ErrIncompleteWrite). The file
// is what iceberg-go would write from the same table properties
// (parquetWriterProperties, TestMergeWriterMatchesIcebergGo), and its
// manifest entry is built from the written footer by
// table.DataFileFromMetadata, iceberg-go's entry point for files written
// outside it.

// dictEnabledKey is iceberg-go's switch for Parquet dictionaries on every
// column (its own constant is internal).
const dictEnabledKey = "parquet.enable.dictionary"

// parquetWriterProperties maps table properties to Parquet writer
// properties as iceberg-go v0.7.0 does (GetWriteProperties and
// getWriteProperties in its table/internal/parquet_files.go), for a schema
// of flat columns: row group and page limits, page version, compression,
// bloom filters, dictionaries, and the cost-based dictionary fallback on
// every column.
//
// Statistics stay on for every column, although the string columns' (the
// row images among them, whose bounds prune nothing) took 3.7% of the
// server's CPU at 150,000 W1 entries/s: arrow-go v18.8.0
// takes a data page's null count from its statistics, so a column written
// without them gets pages of format 2 (iceberg-go's default) that claim
// no nulls. parquet-go, reading such a file, found fewer values than the
// headers promised.
func parquetWriterProperties(props iceberg.Properties, sc *arrow.Schema) (*parquet.WriterProperties, error) {
	var version parquet.DataPageVersion
	switch v := props.Get(table.ParquetPageVersionKey, table.ParquetPageVersionDefault); v {
	case "1":
		version = parquet.DataPageV1
	case "2":
		version = parquet.DataPageV2
	default:
		return nil, fmt.Errorf("%s: unknown Parquet data page version %q", table.ParquetPageVersionKey, v)
	}
	var codec compress.Compression
	switch c := props.Get(table.ParquetCompressionKey, table.ParquetCompressionDefault); c {
	case "snappy":
		codec = compress.Codecs.Snappy
	case "zstd":
		codec = compress.Codecs.Zstd
	case "uncompressed":
		codec = compress.Codecs.Uncompressed
	case "gzip":
		codec = compress.Codecs.Gzip
	case "brotli":
		codec = compress.Codecs.Brotli
	case "lz4":
		codec = compress.Codecs.Lz4
	case "lz4raw":
		codec = compress.Codecs.Lz4Raw
	case "lzo":
		codec = compress.Codecs.Lzo
	default:
		return nil, fmt.Errorf("%s: unknown Parquet compression codec %q", table.ParquetCompressionKey, c)
	}
	wp := []parquet.WriterProperty{
		parquet.WithMaxRowGroupLength(int64(props.GetInt(table.ParquetRowGroupLimitKey, table.ParquetRowGroupLimitDefault))),
		parquet.WithDataPageSize(int64(props.GetInt(table.ParquetPageSizeBytesKey, table.ParquetPageSizeBytesDefault))),
		parquet.WithDataPageVersion(version),
		parquet.WithBatchSize(int64(props.GetInt(table.ParquetPageRowLimitKey, table.ParquetPageRowLimitDefault))),
		parquet.WithDictionaryPageSizeLimit(int64(props.GetInt(table.ParquetDictSizeBytesKey, table.ParquetDictSizeBytesDefault))),
		parquet.WithCompression(codec),
		parquet.WithCompressionLevel(props.GetInt(table.ParquetCompressionLevelKey, table.ParquetCompressionLevelDefault)),
		parquet.WithMaxBloomFilterBytes(int64(props.GetInt(table.ParquetBloomFilterMaxBytesKey, table.ParquetBloomFilterMaxBytesDefault))),
	}
	for key, val := range props {
		if col, ok := strings.CutPrefix(key, table.ParquetBloomFilterColumnEnabledKeyPrefix+"."); ok && col != "" {
			wp = append(wp, parquet.WithBloomFilterEnabledFor(col, javaBool(val)))
		}
	}
	dict := true
	if val, ok := props[dictEnabledKey]; ok {
		dict = javaBool(val)
	}
	wp = append(wp, parquet.WithDictionaryDefault(dict))
	for key, val := range props {
		if col, ok := strings.CutPrefix(key, dictColumnPrefix); ok && col != "" {
			wp = append(wp, parquet.WithDictionaryFor(col, javaBool(val)))
		}
	}
	for _, f := range sc.Fields() {
		switch f.Type.(type) {
		case *arrow.StructType, *arrow.ListType, *arrow.LargeListType, *arrow.MapType, *arrow.FixedSizeListType:
			return nil, fmt.Errorf("column %q: nested columns are not written by the sink's Parquet writer", f.Name)
		}
		wp = append(wp, parquet.WithDictionaryCostFallbackFor(f.Name, true))
	}
	return parquet.NewWriterProperties(wp...), nil
}

// javaBool parses a boolean property as Iceberg's Java writer (and
// iceberg-go) do: only "true", in any case, is true.
func javaBool(val string) bool { return strings.EqualFold(val, "true") }

// fileTarget is where writeSortedFiles writes: a table's partition
// directory, and the properties and sizes of the files.
type fileTarget struct {
	fs            iceio.WriteFileIO
	dir           string // the partition's directory, without a trailing slash
	schema        *iceberg.Schema
	arrowSchema   *arrow.Schema
	props         *parquet.WriterProperties
	tableProps    iceberg.Properties
	formatVersion int
	targetBytes   int64 // a file is closed once it has this many bytes
	rowGroupBytes int64 // a row group is closed once it has this many bytes
}

// newFileTarget returns the target for files of tbl in dir. Pages are of
// the table's size (write.parquet.page-size-bytes), or of maxPageBytes if
// that is smaller and not 0.
func newFileTarget(ctx context.Context, tbl *table.Table, dir string, targetBytes, maxPageBytes int64) (*fileTarget, error) {
	fsys, err := tbl.FS(ctx)
	if err != nil {
		return nil, err
	}
	wfs, ok := fsys.(iceio.WriteFileIO)
	if !ok {
		return nil, fmt.Errorf("table %s: its file IO cannot write", strings.Join(tbl.Identifier(), "."))
	}
	meta := tbl.Metadata()
	sc := tbl.Schema()
	props := meta.Properties()
	asc, err := table.SchemaToArrowSchemaWithOptions(sc, table.ArrowSchemaOptions{IncludeFieldIDs: true, TableProperties: props})
	if err != nil {
		return nil, err
	}
	writeProps := props
	if maxPageBytes > 0 && props.GetInt64(table.ParquetPageSizeBytesKey, table.ParquetPageSizeBytesDefault) > maxPageBytes {
		writeProps = maps.Clone(props)
		writeProps[table.ParquetPageSizeBytesKey] = strconv.FormatInt(maxPageBytes, 10)
	}
	wp, err := parquetWriterProperties(writeProps, asc)
	if err != nil {
		return nil, err
	}
	rg := props.GetInt64(table.ParquetRowGroupSizeBytesKey, table.ParquetRowGroupSizeBytesDefault)
	if rg <= 0 {
		return nil, fmt.Errorf("%s: %d is not a size", table.ParquetRowGroupSizeBytesKey, rg)
	}
	return &fileTarget{fs: wfs, dir: strings.TrimSuffix(dir, "/"), schema: sc, arrowSchema: asc, props: wp,
		tableProps: props, formatVersion: meta.Version(), targetBytes: targetBytes, rowGroupBytes: rg}, nil
}

// writeOnePartition writes records of schema sc, sorted and all of one
// partition, into new files in dir, the partition's directory, on this
// goroutine. ok is false, and records are left unread, when sc is not the
// table's own Arrow schema (iceberg-go's writer projects such records,
// this one does not) or when the table's properties cannot be mapped
// (newFileTarget): the caller then writes through iceberg-go, which
// reports, or works around, what this writer refused. The files' manifest
// entries are unpartitioned and claim no order: the caller binds them
// (viewEntry). maxPageBytes, unless 0, caps the files' page size
// (newFileTarget).
func (s *Sink) writeOnePartition(ctx context.Context, tbl *table.Table, dir string, sc *arrow.Schema, records iter.Seq2[arrow.RecordBatch, error], maxPageBytes int64) (files []iceberg.DataFile, ok bool, err error) {
	targetBytes := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, s.cfg.TargetFileSizeBytes)
	target, err := newFileTarget(ctx, tbl, dir, targetBytes, maxPageBytes)
	if err != nil || !target.arrowSchema.Equal(sc) {
		return nil, false, nil
	}
	files, err = writeSortedFiles(ctx, target, records)
	return files, true, err
}

// dataFiles returns files, or err, as iceberg-go's writer returns them.
func dataFiles(files []iceberg.DataFile, err error) iter.Seq2[iceberg.DataFile, error] {
	return func(yield func(iceberg.DataFile, error) bool) {
		if err != nil {
			yield(nil, err)
			return
		}
		for _, df := range files {
			if !yield(df, nil) {
				return
			}
		}
	}
}

// writeSortedFiles writes records into new files of target, in order,
// closing a file at the target size, and returns their manifest entries,
// unpartitioned and claiming no order (the caller binds them: viewEntry).
// On error the files written so far are removed. It releases each record.
func writeSortedFiles(ctx context.Context, target *fileTarget, records iter.Seq2[arrow.RecordBatch, error]) (files []iceberg.DataFile, err error) {
	var w *openFile
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
	for rec, rerr := range records {
		if rerr != nil {
			return files, rerr
		}
		if err := ctx.Err(); err != nil {
			rec.Release()
			return files, context.Cause(ctx)
		}
		if rec.NumRows() == 0 {
			rec.Release()
			continue
		}
		if w == nil {
			if w, err = target.create(ctx, target.filePath(prefix, len(files))); err != nil {
				rec.Release()
				return files, err
			}
		}
		err := w.write(rec)
		rec.Release()
		if err != nil {
			return files, err
		}
		if w.size() >= target.targetBytes {
			df, err := w.close()
			w = nil
			if err != nil {
				return files, err
			}
			files = append(files, df)
		}
	}
	if w != nil {
		df, err := w.close()
		w = nil
		if err != nil {
			return files, err
		}
		files = append(files, df)
	}
	return files, nil
}

// filePath returns the path of the n-th file (from 0) of a write whose
// files are named after prefix (a UUID), in the target's directory.
func (t *fileTarget) filePath(prefix string, n int) string {
	return fmt.Sprintf("%s/00000-%d-%s.parquet", t.dir, n, prefix)
}

// removeAll removes the files of a write that failed; what is not removed
// is left to orphan cleanup.
func (t *fileTarget) removeAll(files []iceberg.DataFile) {
	for _, df := range files {
		_ = t.fs.Remove(df.FilePath())
	}
}

// writeSliceRows is about how many rows openFile.write hands arrow-go at a
// time (slices of 1,024 cost 10% more CPU). It is rounded up to a whole
// number of arrow-go's write batches (the rows it encodes a column in at a
// time: WriterProperties.WriteBatchSize, which iceberg-go maps from
// write.parquet.page-row-limit), so that the pages are those of one write
// of the whole record.
const writeSliceRows = 4096

// writeSlice returns writeSliceRows rounded up to a multiple of batch.
func writeSlice(batch int64) int64 {
	return (writeSliceRows + batch - 1) / batch * batch
}

// openFile is a data file being written.
type openFile struct {
	target *fileTarget
	path   string
	out    io.WriteCloser
	count  *countingWriter
	pw     *pqarrow.FileWriter
	pacer  pace.Pacer
}

func (t *fileTarget) create(ctx context.Context, path string) (*openFile, error) {
	out, err := t.fs.Create(path)
	if err != nil {
		return nil, err
	}
	f := &openFile{target: t, path: path, out: out, count: &countingWriter{w: out}}
	f.pw, err = pqarrow.NewFileWriter(t.arrowSchema, f.count, t.props,
		pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(compute.GetAllocator(ctx)), pqarrow.WithStoreSchema()))
	if err != nil {
		f.abort()
		return nil, err
	}
	return f, nil
}

// write appends rec to the file's row group, starting a new row group
// once the current one reaches the target's row group size (as
// iceberg-go's writer does, before a write so that no empty row group is
// left at the end).
func (f *openFile) write(rec arrow.RecordBatch) error {
	if f.pw.RowGroupTotalBytesWritten() >= f.target.rowGroupBytes {
		if err := f.pw.NewBufferedRowGroupChecked(); err != nil {
			return err
		}
	}
	// In slices, pacing between them (internal/pace): a stage's record is
	// a table's whole take, tens of milliseconds of encoding.
	slice := writeSlice(f.target.props.WriteBatchSize())
	for off := int64(0); off < rec.NumRows(); off += slice {
		part := rec.NewSlice(off, min(off+slice, rec.NumRows()))
		err := f.pw.WriteBuffered(part)
		part.Release()
		if err != nil {
			return err
		}
		f.pacer.Yield()
	}
	return nil
}

// size is what iceberg-go's rolling writer compares with the target: the
// bytes written out (a buffered row group reaches the output when it is
// closed).
func (f *openFile) size() int64 { return f.count.n }

// close finishes the file and returns its manifest entry.
func (f *openFile) close() (iceberg.DataFile, error) {
	err := f.pw.Close() // closes f.count's writer too, unless a row group fails
	if err != nil {
		_ = f.out.Close()
		_ = f.target.fs.Remove(f.path)
		return nil, fmt.Errorf("write %s: %w", f.path, err)
	}
	fm, err := f.pw.FileMetadata()
	if err != nil {
		_ = f.target.fs.Remove(f.path)
		return nil, err
	}
	return f.target.dataFile(f.path, fm, f.count.n)
}

// abort closes and removes a file that will not be used.
func (f *openFile) abort() {
	_ = f.out.Close()
	_ = f.target.fs.Remove(f.path)
}

// dataFile returns the manifest entry of the file of target at path, of
// size bytes, from its footer; it removes the file if it cannot.
func (t *fileTarget) dataFile(path string, fm *metadata.FileMetaData, size int64) (iceberg.DataFile, error) {
	df, err := table.DataFileFromMetadata(table.DataFileArgs{
		Schema:        t.schema,
		Format:        iceberg.ParquetFile,
		Metadata:      fm,
		FilePath:      path,
		FileSize:      size,
		Content:       iceberg.EntryContentData,
		Properties:    t.tableProps,
		FormatVersion: t.formatVersion,
	})
	if err != nil {
		_ = t.fs.Remove(path)
		return nil, fmt.Errorf("manifest entry of %s: %w", path, err)
	}
	return df, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.WriteCloser
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Close() error { return c.w.Close() }
