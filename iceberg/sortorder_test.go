package iceberg

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestFilesSortedWithoutIcebergSort: the sink writes through a view whose
// sort order is unsorted (presorted), so iceberg-go no longer sorts each
// batch; the order of every file is the sink's own. Rows handed over in no
// order come out sorted in every staged and compacted file, each file
// claims the table's order, and the table's sort orders are untouched.
func TestFilesSortedWithoutIcebergSort(t *testing.T) {
	ctx := context.Background()
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
		tbl, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		meta := tbl.Metadata()
		if n := len(meta.SortOrders()); n != 1 || meta.DefaultSortOrder() != meta.SortOrders()[0].OrderID() {
			t.Errorf("%s: the table has %d sort orders, default %d: the write view leaked", when, n, meta.DefaultSortOrder())
		}
		tasks, err := tbl.Scan().PlanFiles(ctx)
		if err != nil {
			t.Fatal(err)
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
