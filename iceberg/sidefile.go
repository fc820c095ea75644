package iceberg

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	icebergio "github.com/apache/iceberg-go/io"
)

// Side files are the sink's own small Parquet files beside a table's data
// (mirror tombstones, mirror change files): no Iceberg metadata lists
// them, so they are written and read whole, with arrow-go directly.

// sideFileBatchRows is the record batch size of a side file's reader.
const sideFileBatchRows = 64 << 10

// encodeSideFile returns rec as a zstd-compressed Parquet file.
func encodeSideFile(rec arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd))
	w, err := pqarrow.NewFileWriter(rec.Schema(), &buf, props, pqarrow.DefaultWriterProps())
	if err != nil {
		return nil, err
	}
	if err := errors.Join(w.Write(rec), w.Close()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeSideFile writes data at path through fs.
func writeSideFile(fs icebergio.IO, path string, data []byte) error {
	wfs, ok := fs.(icebergio.WriteFileIO)
	if !ok {
		return fmt.Errorf("the table's file IO %T cannot write files", fs)
	}
	return wfs.WriteFile(path, data)
}

// readSideFile calls fn with each record batch of the Parquet file r, in
// order. fn must not keep the batch or slices of its values.
func readSideFile(ctx context.Context, r parquet.ReaderAtSeeker, fn func(arrow.RecordBatch) error) error {
	pf, err := file.NewParquetReader(r)
	if err != nil {
		return err
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: sideFileBatchRows}, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return err
	}
	defer rr.Release()
	for rr.Next() {
		if err := fn(rr.RecordBatch()); err != nil {
			return err
		}
	}
	return rr.Err()
}
