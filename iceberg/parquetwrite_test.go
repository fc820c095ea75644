package iceberg

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMergeWriterMatchesIcebergGo merges the same sorted files twice: with
// the sink's own writer (what compaction uses for one partition's sorted
// files) and with iceberg-go's, as compaction did before. The files must
// be alike: the same rows in the same order, the same Parquet layout
// (codec, encodings, dictionaries, statistics per column), and the same
// manifest entry (partition, sort order, counts, bounds).
func TestMergeWriterMatchesIcebergGo(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	for i := 1; i <= 4; i++ {
		mustCommit(t, s, w1Flush(uint64(i), testSources, uint64(i), 1, 400))
	}
	tbl, tasks := tableTasks(t, s, "users")
	if len(tasks) < 4 {
		t.Fatalf("users has %d files, want at least 4", len(tasks))
	}
	var inputs []iceberg.DataFile
	for _, task := range tasks {
		inputs = append(inputs, task.File)
	}

	m, err := newMerger(ctx, tbl, tasks, readDirectOrScan, nil)
	if err != nil {
		t.Fatal(err)
	}
	written, entry, err := s.writeMerge(ctx, tbl, m, inputs, false)
	if err != nil {
		t.Fatal(err)
	}
	var ours []iceberg.DataFile
	for df, err := range written {
		if err == nil {
			df, err = entry(df)
		}
		if err != nil {
			t.Fatal(err)
		}
		ours = append(ours, df)
	}
	m.close()

	m, err = newMerger(ctx, tbl, tasks, readDirectOrScan, nil)
	if err != nil {
		t.Fatal(err)
	}
	wtbl, entry, err := s.mergeView(tbl, inputs)
	if err != nil {
		t.Fatal(err)
	}
	var theirs []iceberg.DataFile
	for df, err := range table.WriteRecords(ctx, wtbl, m.schema, m.batches(), table.WithClusteredWrite()) {
		if err == nil {
			df, err = entry(df)
		}
		if err != nil {
			t.Fatal(err)
		}
		theirs = append(theirs, df)
	}
	m.close()

	if len(ours) != 1 || len(theirs) != 1 {
		t.Fatalf("%d files written by the sink's writer, %d by iceberg-go's; want 1 each", len(ours), len(theirs))
	}
	a, b := ours[0], theirs[0]
	if !ownFileName(a.FilePath()) || ownFileName(b.FilePath()) {
		t.Fatalf("the merge did not go through the sink's writer: %s (iceberg-go's: %s)", a.FilePath(), b.FilePath())
	}
	if fileDir(a.FilePath()) != fileDir(b.FilePath()) {
		t.Errorf("directory %s, iceberg-go's %s", fileDir(a.FilePath()), fileDir(b.FilePath()))
	}
	same := func(what string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			t.Errorf("%s: %v, iceberg-go's %v", what, x, y)
		}
	}
	same("rows", a.Count(), b.Count())
	same("spec", a.SpecID(), b.SpecID())
	same("partition", a.Partition(), b.Partition())
	same("sort order", deref(a.SortOrderID()), deref(b.SortOrderID()))
	same("content", a.ContentType(), b.ContentType())
	same("format", a.FileFormat(), b.FileFormat())
	same("value counts", sortedMap(a.ValueCounts()), sortedMap(b.ValueCounts()))
	same("null counts", sortedMap(a.NullValueCounts()), sortedMap(b.NullValueCounts()))
	same("lower bounds", sortedMap(a.LowerBoundValues()), sortedMap(b.LowerBoundValues()))
	same("upper bounds", sortedMap(a.UpperBoundValues()), sortedMap(b.UpperBoundValues()))
	if d := a.FileSizeBytes() - b.FileSizeBytes(); d < -512 || d > 512 {
		t.Errorf("file size %d, iceberg-go's %d", a.FileSizeBytes(), b.FileSizeBytes())
	}
	same("parquet layout", parquetLayout(t, a.FilePath()), parquetLayout(t, b.FilePath()))
	ra, rb := readRecord(t, a.FilePath()), readRecord(t, b.FilePath())
	defer ra.Release()
	defer rb.Release()
	if !ra.Schema().Equal(rb.Schema()) {
		t.Errorf("arrow schema %v, iceberg-go's %v", ra.Schema(), rb.Schema())
	}
	if !array.RecordEqual(ra, rb) {
		t.Error("the rows differ from iceberg-go's")
	}
	checkSortedFile(t, a.FilePath())
}

// TestMergeWriterRollsAtTargetSize writes a merge with a small target
// size: it rolls over into several files, every row written once, each file
// sorted, none empty.
func TestMergeWriterRollsAtTargetSize(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		// Pages of 4 KiB: a row group's bytes count its finished pages.
		c.TableProperties = iceberg.Properties{table.ParquetPageSizeBytesKey: "4096"}
	})
	for i := 1; i <= 4; i++ {
		mustCommit(t, s, w1Flush(uint64(i), testSources, uint64(i), 1, 3000))
	}
	tbl, tasks := tableTasks(t, s, "users")
	var inputs []iceberg.DataFile
	var want int64
	for _, task := range tasks {
		inputs = append(inputs, task.File)
		want += task.File.Count()
	}
	m, err := newMerger(ctx, tbl, tasks, readDirectOrScan, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	dir, _, one := onePartition(tbl.Metadata(), inputs)
	if !one {
		t.Fatal("the inputs are not of one partition")
	}
	// A row group is written out as it closes: row groups of 16 KiB let a
	// file reach a target of 32 KiB.
	target, err := newFileTarget(ctx, tbl, dir, 32<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	target.rowGroupBytes = 16 << 10
	files, err := writeSortedFiles(ctx, target, m.batches())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("%d files for a target of 32 KiB", len(files))
	}
	var got int64
	for _, df := range files {
		if df.Count() == 0 {
			t.Errorf("%s is empty", df.FilePath())
		}
		got += checkSortedFile(t, df.FilePath())
	}
	if got != want {
		t.Errorf("%d rows in %d files, want %d", got, len(files), want)
	}
}

// TestMergeWriterRemovesFilesOnError: a merge that fails midway (its
// input ends in an error) leaves no file behind.
func TestMergeWriterRemovesFilesOnError(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		c.TableProperties = iceberg.Properties{table.ParquetPageSizeBytesKey: "4096"}
	})
	mustCommit(t, s, w1Flush(1, testSources, 1, 1, 4000))
	tbl, tasks := tableTasks(t, s, "users")
	dir, _, one := onePartition(tbl.Metadata(), []iceberg.DataFile{tasks[0].File})
	if !one {
		t.Fatal("not one partition")
	}
	target, err := newFileTarget(ctx, tbl, dir, 8<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	target.rowGroupBytes = 4 << 10
	m, err := newMerger(ctx, tbl, tasks, readDirectOrScan, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	before := dataFilesIn(t, dir)
	if _, err := writeSortedFiles(ctx, target, failingAt(m, 2)); err == nil || !strings.Contains(err.Error(), "input read failed") {
		t.Fatalf("error %v, want the input's", err)
	}
	if after := dataFilesIn(t, dir); !slices.Equal(before, after) {
		t.Errorf("files left behind: before %v, after %v", before, after)
	}
}

// failingAt yields m's merged batches until the at-th, in whose place it
// yields an error, "input read failed".
func failingAt(m *merger, at int) iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		n := 0
		for rec, err := range m.batches() {
			if n++; n == at {
				rec.Release()
				yield(nil, fmt.Errorf("input read failed"))
				return
			}
			if !yield(rec, err) {
				return
			}
		}
	}
}

// ownFileName reports whether p is named as the sink's writer names its
// files (writeSortedFiles): iceberg-go's names end in a 5-digit count.
func ownFileName(p string) bool {
	return !regexp.MustCompile(`-[0-9]{5}\.parquet$`).MatchString(p)
}

func dataFilesIn(t *testing.T, dir string) []string {
	t.Helper()
	got, err := filepath.Glob(localPath(dir) + "/*.parquet")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func sortedMap[V any](m map[int]V) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%d=%v ", k, m[k])
	}
	return b.String()
}

// parquetLayout describes how a Parquet file is written, column by column:
// row groups, codec, encodings, dictionary page, statistics.
func parquetLayout(t *testing.T, p string) string {
	t.Helper()
	r, err := file.OpenParquetFile(localPath(p), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b strings.Builder
	md := r.MetaData()
	fmt.Fprintf(&b, "rowgroups=%d ", md.NumRowGroups())
	for i := range md.NumRowGroups() {
		rg := md.RowGroup(i)
		fmt.Fprintf(&b, "[rows=%d", rg.NumRows())
		for c := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				t.Fatal(err)
			}
			stats, _ := cc.StatsSet()
			fmt.Fprintf(&b, " %s:%s:%v:dict=%v:stats=%v", cc.PathInSchema(), cc.Compression(), cc.Encodings(), cc.HasDictionaryPage(), stats)
		}
		b.WriteString("] ")
	}
	for _, kv := range md.KeyValueMetadata().Keys() {
		fmt.Fprintf(&b, "kv=%s ", kv)
	}
	return b.String()
}

func readRecord(t *testing.T, p string) arrow.RecordBatch {
	t.Helper()
	r, err := file.OpenParquetFile(localPath(p), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fr, err := pqarrow.NewFileReader(r, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, tbl.NumRows())
	defer tr.Release()
	if !tr.Next() {
		t.Fatal("no rows")
	}
	rec := tr.RecordBatch()
	rec.Retain()
	return rec
}

// TestStageWritesOwnFiles: a stage of rows of one day is written by the
// sink's writer, and its files are what iceberg-go's would be: sorted,
// claiming the table's order, in the day's partition and directory, with
// every row.
func TestStageWritesOwnFiles(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	f := w1Flush(1, testSources, 1, 1, 400)
	mustCommit(t, s, f)
	tbl, tasks := tableTasks(t, s, "users")
	if len(tasks) == 0 {
		t.Fatal("users has no files")
	}
	meta := tbl.Metadata()
	want, lo, hi := int64(0), int64(math.MaxInt64), int64(math.MinInt64)
	for _, tt := range f.Tables {
		if tt.Name == "users" {
			want = int64(len(tt.Rows))
			for _, r := range tt.Rows {
				lo, hi = min(lo, int64(r.Timestamp)), max(hi, int64(r.Timestamp))
			}
		}
	}
	dir, _, one := timePartition(tbl, lo, hi)
	if !one {
		t.Fatalf("the rows' event times %d-%d are not of one day", lo, hi)
	}
	var rows int64
	for _, task := range tasks {
		df := task.File
		if !ownFileName(df.FilePath()) {
			t.Errorf("%s: not written by the sink's writer", df.FilePath())
		}
		if id := df.SortOrderID(); id == nil || *id != meta.DefaultSortOrder() {
			t.Errorf("%s: sort order %v, want %d", df.FilePath(), deref(id), meta.DefaultSortOrder())
		}
		if int(df.SpecID()) != meta.DefaultPartitionSpec() || len(df.Partition()) != 1 {
			t.Errorf("%s: spec %d partition %v, want the table's day partition", df.FilePath(), df.SpecID(), df.Partition())
		}
		if fileDir(df.FilePath()) != dir {
			t.Errorf("%s: not in the partition's directory %s", df.FilePath(), dir)
		}
		if n := checkSortedFile(t, df.FilePath()); n != df.Count() {
			t.Errorf("%s: %d rows, its entry says %d", df.FilePath(), n, df.Count())
		}
		rows += df.Count()
	}
	if rows != want {
		t.Errorf("%d rows in users, want %d", rows, want)
	}
	diffKeys(t, flushKeys(f), scanKeys(t, s))
}

// TestSlicedWriteIsOneWrite: openFile.write hands a record to arrow-go in
// slices, to pace between them; the file must be byte for byte the one a
// single write of the record makes (pages, dictionaries and statistics cut
// at the same rows). A slice size that is not a multiple of arrow-go's
// write batch moves the page boundaries and fails this.
func TestSlicedWriteIsOneWrite(t *testing.T) {
	// The sink's page row limit (256 rows a batch), and one that does not
	// divide the slice (3,000).
	for _, rows := range []string{"", "3000"} {
		t.Run("page-row-limit="+rows, func(t *testing.T) { testSlicedWriteIsOneWrite(t, rows) })
	}
}

func testSlicedWriteIsOneWrite(t *testing.T, pageRows string) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		// Pages of 8 KiB: many page boundaries within the record.
		c.TableProperties = iceberg.Properties{table.ParquetPageSizeBytesKey: "8192"}
		if pageRows != "" {
			c.TableProperties[table.ParquetPageRowLimitKey] = pageRows
		}
	})
	// One small commit creates the table; the record is of more rows.
	small := w1Flush(1, oneSource, 1, 1, 8)
	small.Tables = slices.DeleteFunc(small.Tables, func(t sink.Table) bool { return t.Name != "users" })
	mustCommit(t, s, small)
	tbl, _ := tableTasks(t, s, "users")
	f := w1Flush(2, testSources, 2, 6, 8000)
	var rows []*sink.Row
	for i := range f.Tables {
		if f.Tables[i].Name == "users" {
			for j := range f.Tables[i].Rows {
				rows = append(rows, &f.Tables[i].Rows[j])
			}
		}
	}
	sortRows(rows)
	rec, err := buildRecord(s.schema, rows, f.Time.UnixMicro(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	dir := t.TempDir()
	target, err := newFileTarget(ctx, tbl, dir, math.MaxInt64, 0)
	if err != nil {
		t.Fatal(err)
	}
	slice := writeSlice(target.props.WriteBatchSize())
	if rec.NumRows() <= 2*slice {
		t.Fatalf("%d rows: too few for several slices", rec.NumRows())
	}
	if !rec.Schema().Equal(target.arrowSchema) {
		t.Fatalf("record schema %s, table's %s", rec.Schema(), target.arrowSchema)
	}
	sliced := filepath.Join(dir, "sliced.parquet")
	w, err := target.create(ctx, sliced)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := w.close(); err != nil {
		t.Fatal(err)
	}

	var whole bytes.Buffer
	pw, err := pqarrow.NewFileWriter(target.arrowSchema, &whole, target.props,
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.WriteBuffered(rec); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(sliced)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, whole.Bytes()) {
		t.Errorf("written in slices of %d rows: %d bytes; in one write: %d bytes, not the same", slice, len(got), whole.Len())
	}
}
