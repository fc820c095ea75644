package iceberg

import (
	"context"
	"encoding/base64"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// mergedRows runs a merge of every file of table name and returns its rows,
// each as its columns' values, in the order written, and whether the merge
// read its inputs directly.
func mergedRows(t *testing.T, s *Sink, name string, readDirect bool) ([]string, bool) {
	t.Helper()
	reads := readScanOnly
	if readDirect {
		reads = readDirectOrScan
	}
	return mergedRowsWith(t, context.Background(), s, name, reads)
}

// mergedRowsWith is mergedRows with ctx's allocator and reads.
func mergedRowsWith(t *testing.T, ctx context.Context, s *Sink, name string, reads mergeReads) ([]string, bool) {
	t.Helper()
	tbl, tasks := tableTasks(t, s, name)
	m, err := newMerger(ctx, tbl, tasks, reads, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	var rows []string
	var want int64
	for _, task := range tasks {
		want += task.File.Count()
	}
	for rec, err := range m.batches() {
		if err != nil {
			t.Fatal(err)
		}
		if !rec.Schema().Equal(m.schema) {
			t.Fatalf("batch schema %s, want %s", rec.Schema(), m.schema)
		}
		for i := range int(rec.NumRows()) {
			var b strings.Builder
			for c := range int(rec.NumCols()) {
				b.WriteString(rec.Column(c).ValueStr(i))
				b.WriteByte('|')
			}
			rows = append(rows, b.String())
		}
		rec.Release()
	}
	if int64(len(rows)) != want {
		t.Fatalf("merge gave %d rows of %d", len(rows), want)
	}
	return rows, m.direct
}

// TestCompactionReadsSinkFilesDirectly: a merge of the sink's own files reads
// them without iceberg-go's scan, and yields exactly the rows, values and
// order that the scan gives.
func TestCompactionReadsSinkFilesDirectly(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	for i := uint64(1); i <= 6; i++ {
		// Three sources, batches of 700 entries: runs longer than a
		// merge batch, and nulls in before, after and shard_name.
		mustCommit(t, s, w1Flush(i, testSources, i, 1, 700))
	}
	direct, ok := mergedRows(t, s, "users", true)
	if !ok {
		t.Fatal("the merge of the sink's own files read them through iceberg-go's scan")
	}
	scanned, ok := mergedRows(t, s, "users", false)
	if ok {
		t.Fatal("readDirect false read directly")
	}
	if len(direct) != len(scanned) {
		t.Fatalf("%d rows read directly, %d through the scan", len(direct), len(scanned))
	}
	for i := range direct {
		if direct[i] != scanned[i] {
			t.Fatalf("row %d read directly:\n%s\nthrough the scan:\n%s", i, direct[i], scanned[i])
		}
	}
	if !strings.Contains(strings.Join(direct, "\n"), "(null)") {
		t.Error("no null value among the rows: the test does not cover nulls")
	}
}

// TestCompactionAfterSchemaChange: files written before a column was added
// to the table are not the table's columns, so the merge reads them through
// iceberg-go's scan, which maps them onto the new schema; every row stays.
func TestCompactionAfterSchemaChange(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	var fs []*sink.Flush
	for i := uint64(1); i <= 4; i++ {
		f := w1Flush(i, testSources, i, 1, 40)
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	addColumn(t, s, "users", "reviewed_by")
	if _, direct := mergedRows(t, s, "users", true); direct {
		t.Fatal("files without the new column were read directly")
	}
	maintain(t, s, MaintainOptions{})
	if n := len(liveFiles(t, s, "users")); n != 1 {
		t.Fatalf("users has %d files after compaction, want 1", n)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
	// The merged file has the table's new columns: a second merge reads
	// it directly.
	if _, direct := mergedRows(t, s, "users", true); !direct {
		t.Error("the compacted file, written under the new schema, was not read directly")
	}
}

// TestCompactionReaderMemoryBounded: a merge holds a bounded amount of each
// input (a batch, a page and compactReadBuffer per column), not the input's
// column chunks whole, so large inputs do not multiply a merge's memory.
func TestCompactionReaderMemoryBounded(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	const files = 3
	commitBlobFiles(t, s, files, 20000)
	tbl, tasks := tableTasks(t, s, "blobs")
	var size int64
	for _, task := range tasks {
		size += task.File.FileSizeBytes()
	}
	if len(tasks) != files || size < files*8<<20 {
		t.Fatalf("%d files of %d bytes in all: the inputs are not large", len(tasks), size)
	}
	var before, open runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := newMerger(ctx, tbl, tasks, readDirectOrScan, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	runtime.GC()
	runtime.ReadMemStats(&open)
	if !m.direct {
		t.Fatal("the merge did not read the sink's files directly")
	}
	held := int64(open.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d inputs of %d bytes in all: %d bytes held by the open merge", len(tasks), size, held)
	if held > size/2 {
		t.Errorf("the open merge holds %d bytes for inputs of %d bytes", held, size)
	}
}

// commitBlobFiles commits files data files of rows rows each to table
// "blobs", one source in entry order, each row's after a JSON text of a
// random 700-byte blob (about 1 KB that compresses little).
func commitBlobFiles(t *testing.T, s *Sink, files, rows uint64) {
	t.Helper()
	rnd := rand.NewChaCha8([32]byte{1, 2})
	blob := make([]byte, 700)
	for i := range files {
		f := &sink.Flush{ID: i + 1, Reason: "test", Time: time.Now(), Watermarks: make(map[string]sink.Watermark)}
		tb := sink.Table{Name: "blobs"}
		for j := range rows {
			seq := i*rows + j + 1
			e := codec.Entry{Sequence: seq, Timestamp: uint64(time.Now().UnixMilli()), Op: codec.OpInsert,
				Table: []byte("blobs"), RowID: []byte(strconv.FormatUint(seq, 10)), After: blobRow(rnd, blob)}
			tb.Rows = append(tb.Rows, sink.Row{SourceID: "src", BatchSeq: i + 1, Entry: e})
			sink.MergeWatermark(f.Watermarks, "src", sink.Watermark{BatchSeq: i + 1, EntrySeq: seq})
		}
		f.Tables = []sink.Table{tb}
		mustCommit(t, s, f)
	}
}

// blobRow returns a row image of blob filled from rnd: about 1 KB of JSON
// text (for a 700-byte blob) that compresses little.
func blobRow(rnd *rand.ChaCha8, blob []byte) []byte {
	_, _ = rnd.Read(blob)
	return []byte(`{"blob":"` + base64.StdEncoding.EncodeToString(blob) + `"}`)
}

// addColumn adds an optional string column col to the table name, as
// someone altering the table elsewhere would.
func addColumn(t *testing.T, s *Sink, name, col string) {
	t.Helper()
	ctx := context.Background()
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	txn := tbl.NewTransaction()
	if err := txn.UpdateSchema(true, false).AddColumn([]string{col}, iceberg.PrimitiveTypes.String, "", false, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
