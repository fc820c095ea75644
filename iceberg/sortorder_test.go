package iceberg

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestFilesSortedWithoutIcebergSort: the sink writes through a view whose
// sort order is unsorted (writeView), so iceberg-go no longer sorts each
// batch; the order of every file is the sink's own. Rows handed over in no
// order come out sorted in every staged and compacted file, each file
// claims the table's order, and the table's sort orders are untouched.
func TestFilesSortedWithoutIcebergSort(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 3 })
	rng := rand.New(rand.NewPCG(1, 2))
	var fs []*sink.Flush
	for i := uint64(1); i <= 4; i++ {
		f := w1Flush(i, testSources, i, 1, 64)
		for _, tb := range f.Tables {
			rng.Shuffle(len(tb.Rows), func(a, b int) { tb.Rows[a], tb.Rows[b] = tb.Rows[b], tb.Rows[a] })
		}
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	check := func(when string, wantFiles int) {
		t.Helper()
		tbl, tasks := tableTasks(t, s, "users")
		meta := tbl.Metadata()
		if n := len(meta.SortOrders()); n != 1 || meta.DefaultSortOrder() != meta.SortOrders()[0].OrderID() {
			t.Errorf("%s: the table has %d sort orders, default %d: the write view leaked", when, n, meta.DefaultSortOrder())
		}
		if len(tasks) != wantFiles {
			t.Fatalf("%s: %d files, want %d", when, len(tasks), wantFiles)
		}
		for _, task := range tasks {
			checkSortedFile(t, task.File.FilePath())
			if id := task.File.SortOrderID(); id == nil || *id != meta.DefaultSortOrder() {
				t.Errorf("%s: %s claims sort order %v, want %d", when, task.File.FilePath(), id, meta.DefaultSortOrder())
			}
		}
	}
	check("after commits", 4)
	maintain(t, s, MaintainOptions{})
	check("after compaction", 1)
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
}

// TestCompactionClaimsOrderOnlyOfClaimedInputs: a file another writer
// appended claims no sort order (iceberg-go never claims one), so a
// compaction that merges it claims none either; merges of the sink's own
// files claim the order (TestFilesSortedWithoutIcebergSort).
func TestCompactionClaimsOrderOnlyOfClaimedInputs(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 3 })
	fs := []*sink.Flush{w1Flush(1, oneSource, 1, 1, 16), w1Flush(2, oneSource, 2, 1, 16)}
	for _, f := range fs {
		mustCommit(t, s, f)
	}
	// Another writer's append, through iceberg-go, of rows of their own.
	other := w1Flush(3, testSources[1:2], 1, 1, 16)
	var rows []*sink.Row
	for i := range other.Tables {
		if other.Tables[i].Name == "users" {
			for j := range other.Tables[i].Rows {
				rows = append(rows, &other.Tables[i].Rows[j])
			}
		}
	}
	rec, err := buildRecord(s.schema, rows, time.Now().UnixMicro(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	rdr, err := array.NewRecordReader(rec.Schema(), []arrow.RecordBatch{rec})
	if err != nil {
		t.Fatal(err)
	}
	txn := tbl.NewTransaction()
	if err := txn.Append(ctx, rdr, nil); err != nil {
		t.Fatal(err)
	}
	rdr.Release()
	rec.Release()
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(liveFiles(t, s, "users")); n != 3 {
		t.Fatalf("%d files before compaction, want 3", n)
	}
	maintain(t, s, MaintainOptions{})
	_, tasks := tableTasks(t, s, "users")
	if len(tasks) != 1 {
		t.Fatalf("%d files after compaction, want 1", len(tasks))
	}
	if id := tasks[0].File.SortOrderID(); id != nil && *id != table.UnsortedSortOrderID {
		t.Errorf("the merge of an unclaimed input claims sort order %d", *id)
	}
	want := flushKeys(fs...)
	for k, n := range flushKeys(other) {
		if k.table == "users" {
			want[k] += n
		}
	}
	got := scanKeys(t, s)
	for k, n := range want {
		if k.table == "users" && got[k] != n {
			t.Errorf("%v: %d rows after compaction, want %d", k, got[k], n)
		}
	}
}
