package iceberg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	iceberg "github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// usersRows returns the rows of the users table of f, sorted as a stage
// sorts them, with a few edge cases mixed in: rows without a shard name,
// and empty (not null) row images.
func usersRows(f *sink.Flush) []*sink.Row {
	var rows []*sink.Row
	for i := range f.Tables {
		if f.Tables[i].Name == "users" {
			for j := range f.Tables[i].Rows {
				rows = append(rows, &f.Tables[i].Rows[j])
			}
		}
	}
	for i, r := range rows {
		switch i % 97 {
		case 3:
			r.ShardName = ""
		case 5:
			r.Before = []byte{}
		case 7:
			r.After = []byte{}
		}
	}
	sortRows(rows)
	return rows
}

// usersTable commits a small flush to create the users table of s, and
// returns the table.
func usersTable(t *testing.T, s *Sink) *table.Table {
	t.Helper()
	small := w1Flush(1, oneSource, 1, 1, 8)
	small.Tables = slices.DeleteFunc(small.Tables, func(t sink.Table) bool { return t.Name != "users" })
	mustCommit(t, s, small)
	tbl, _ := tableTasks(t, s, "users")
	return tbl
}

// TestRowWriterMatchesArrowWriter: a stage written straight from the
// entries (writeRowFiles) is byte for byte the file pqarrow writes from
// the Arrow record of the same rows (buildRecord, openFile.write): the
// same schema and stored Arrow schema, pages, encodings and statistics,
// whatever the page size, page row limit, codec and page format.
func TestRowWriterMatchesArrowWriter(t *testing.T) {
	for _, props := range []iceberg.Properties{
		nil,
		{table.ParquetPageSizeBytesKey: "8192", table.ParquetPageRowLimitKey: "1000", table.ParquetCompressionKey: "snappy"},
		{table.ParquetPageVersionKey: "1", dictEnabledKey: "true"},
	} {
		t.Run(fmt.Sprint(props), func(t *testing.T) {
			ctx := context.Background()
			s := openTestSink(t, t.TempDir(), func(c *Config) {
				c.Maintenance.CompactDisabled = true
				c.TableProperties = props
			})
			tbl := usersTable(t, s)
			f := w1Flush(2, testSources, 2, 6, 8000)
			rows := usersRows(f)
			dir := t.TempDir()
			target, err := newFileTarget(ctx, tbl, dir, math.MaxInt64, 0)
			if err != nil {
				t.Fatal(err)
			}
			if n := int64(len(rows)); n <= 2*writeSlice(target.props.WriteBatchSize()) {
				t.Fatalf("%d rows: too few for several slices", n)
			}
			files, err := writeRowFiles(ctx, target, rows, f.Time.UnixMicro())
			if err != nil || len(files) != 1 {
				t.Fatalf("writeRowFiles: %d files, err %v", len(files), err)
			}

			rec, err := buildRecord(s.schema, rows, f.Time.UnixMicro(), nil)
			if err != nil {
				t.Fatal(err)
			}
			viaArrow := filepath.Join(dir, "arrow.parquet")
			w, err := target.create(ctx, viaArrow)
			if err != nil {
				t.Fatal(err)
			}
			err = w.write(rec)
			rec.Release()
			if err != nil {
				t.Fatal(err)
			}
			want, err := w.close()
			if err != nil {
				t.Fatal(err)
			}

			got, err := os.ReadFile(localPath(files[0].FilePath()))
			if err != nil {
				t.Fatal(err)
			}
			wantBytes, err := os.ReadFile(viaArrow)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantBytes) {
				t.Errorf("from the entries: %d bytes; from an Arrow record: %d bytes, not the same\n%s\n%s",
					len(got), len(wantBytes), parquetLayout(t, files[0].FilePath()), parquetLayout(t, viaArrow))
			}
			if files[0].Count() != want.Count() || files[0].FileSizeBytes() != want.FileSizeBytes() ||
				sortedMap(files[0].NullValueCounts()) != sortedMap(want.NullValueCounts()) ||
				sortedMap(files[0].LowerBoundValues()) != sortedMap(want.LowerBoundValues()) ||
				sortedMap(files[0].UpperBoundValues()) != sortedMap(want.UpperBoundValues()) {
				t.Errorf("manifest entries differ: %d rows, %d bytes, nulls %s; want %d rows, %d bytes, nulls %s",
					files[0].Count(), files[0].FileSizeBytes(), sortedMap(files[0].NullValueCounts()),
					want.Count(), want.FileSizeBytes(), sortedMap(want.NullValueCounts()))
			}
		})
	}
}

// smallPageUsers returns the users table of a new sink whose pages are of
// 4 KiB, and a flush of W1 with its users rows (usersRows).
func smallPageUsers(t *testing.T) (*table.Table, *sink.Flush, []*sink.Row) {
	t.Helper()
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		c.TableProperties = iceberg.Properties{table.ParquetPageSizeBytesKey: "4096"}
	})
	tbl := usersTable(t, s)
	f := w1Flush(2, testSources, 2, 6, 8000)
	return tbl, f, usersRows(f)
}

// TestRowWriterSplitsRowGroupsAndFiles: rows beyond the row group size
// start a new row group, and a file that reaches the target size is
// closed; every row is in the files, in order.
func TestRowWriterSplitsRowGroupsAndFiles(t *testing.T) {
	ctx := context.Background()
	tbl, f, rows := smallPageUsers(t)
	dir := t.TempDir()
	target, err := newFileTarget(ctx, tbl, dir, 64<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	target.rowGroupBytes = 128 << 10
	files, err := writeRowFiles(ctx, target, rows, f.Time.UnixMicro())
	if err != nil {
		t.Fatalf("writeRowFiles: %v", err)
	}
	if len(files) < 2 {
		t.Fatalf("%d files for a target of 64 KiB", len(files))
	}
	var got int64
	groups := 0
	for _, df := range files {
		got += checkSortedFile(t, df.FilePath())
		groups += len(df.SplitOffsets())
	}
	if got != int64(len(rows)) {
		t.Errorf("%d rows in %d files, want %d", got, len(files), len(rows))
	}
	if groups <= len(files) {
		t.Errorf("%d row groups in %d files: no file has several", groups, len(files))
	}
	for _, n := range []struct{ maxRows, maxBytes int64 }{{1, math.MaxInt64}, {10, math.MaxInt64}, {math.MaxInt64, 1}} {
		if k := rowGroupRows(rows, n.maxRows, n.maxBytes); k < 1 || k > int(max(n.maxRows, 1)) {
			t.Errorf("rowGroupRows(max %d rows, %d bytes) = %d", n.maxRows, n.maxBytes, k)
		}
	}
}

// TestRowWriterRemovesFilesOnError: a stage that fails midway (its file
// system fails a file's creation after two files; its context ends) leaves
// no file behind and returns the cause.
func TestRowWriterRemovesFilesOnError(t *testing.T) {
	tbl, f, rows := smallPageUsers(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(context.Background())
	target, err := newFileTarget(ctx, tbl, dir, 16<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	target.rowGroupBytes = 32 << 10
	// The file system fails the third file's creation.
	fsys := &failingCreate{WriteFileIO: target.fs, failAt: 3}
	target.fs = fsys
	_, err = writeRowFiles(ctx, target, rows, f.Time.UnixMicro())
	if !errors.Is(err, errCreateFailed) {
		t.Fatalf("error %v, want the file system's", err)
	}
	if left := dataFilesIn(t, dir); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
	cancel(errors.New("stage abandoned"))
	if _, err := writeRowFiles(ctx, target, rows, f.Time.UnixMicro()); err == nil || err.Error() != "stage abandoned" {
		t.Errorf("error %v after the context ended, want its cause", err)
	}
	if left := dataFilesIn(t, dir); len(left) != 0 {
		t.Errorf("files left behind: %v", left)
	}
}

var errCreateFailed = errors.New("create failed")

// failingCreate fails the failAt-th Create.
type failingCreate struct {
	iceio.WriteFileIO
	n, failAt int
}

func (f *failingCreate) Create(name string) (iceio.FileWriter, error) {
	if f.n++; f.n == f.failAt {
		return nil, errCreateFailed
	}
	return f.WriteFileIO.Create(name)
}

// TestStageOnEvolvedTable: a table whose schema someone changed (a column
// added) is not the sink's schema, which the row writer fills by position:
// its stages go through an Arrow record, and every row is committed.
func TestStageOnEvolvedTable(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	first := w1Flush(1, testSources, 1, 1, 40)
	mustCommit(t, s, first)
	addColumn(t, s, "users", "reviewed_by")
	second := w1Flush(2, testSources, 2, 1, 40)
	mustCommit(t, s, second)
	diffKeys(t, flushKeys(first, second), scanKeys(t, s))
}
