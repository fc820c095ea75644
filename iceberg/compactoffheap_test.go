package iceberg

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/compute"
	iceberg "github.com/apache/iceberg-go"

	"github.com/dot-do/lakehouse-rpc/internal/offheap"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMergeRunsOffHeap: a compaction of one partition's staged files runs
// with its Arrow buffers off the Go heap, releases every one of them, and
// loses no row.
func TestMergeRunsOffHeap(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	type merge struct {
		st          offheap.Stats
		outstanding int64
	}
	var merges []merge
	s.afterOffHeapMerge = func(st offheap.Stats, out int64) { merges = append(merges, merge{st, out}) }
	var fs []*sink.Flush
	for i := uint64(1); i <= 4; i++ {
		f := w1Flush(i, testSources, i, 1, 2000)
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	maintain(t, s, MaintainOptions{})
	if len(merges) == 0 {
		t.Fatal("no merge ran off the heap")
	}
	for _, m := range merges {
		if m.st.Peak < offheap.MinMapped {
			t.Errorf("a merge mapped no memory: %+v", m.st)
		}
		if m.outstanding != 0 {
			t.Errorf("a merge left %d bytes of buffers unreleased", m.outstanding)
		}
	}
	if got := s.MaintenanceTotals().MergeOffHeapBytes; got != 0 {
		t.Errorf("%d off-heap bytes still mapped after the merges", got)
	}
	if n := len(liveFiles(t, s, "users")); n != 1 {
		t.Fatalf("users has %d files after compaction, want 1", n)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
}

// TestMergeHalvesTheCollectorsRoom: with a memory limit, the collector
// keeps half its room (GOGC) while a merge runs, and the process's is back
// after the pass.
func TestMergeHalvesTheCollectorsRoom(t *testing.T) {
	prevLimit := debug.SetMemoryLimit(-1)
	prevGC := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(prevLimit); debug.SetGCPercent(prevGC) })
	gcPercent := func() int { v := debug.SetGCPercent(-1); debug.SetGCPercent(v); return v }
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4; c.MemoryLimit = 1 << 30 })
	var during []int
	s.afterOffHeapMerge = func(offheap.Stats, int64) { during = append(during, gcPercent()) }
	for i := uint64(1); i <= 4; i++ {
		mustCommit(t, s, w1Flush(i, testSources, i, 1, 500))
	}
	maintain(t, s, MaintainOptions{})
	if len(during) == 0 {
		t.Fatal("no merge ran off the heap")
	}
	for _, v := range during {
		if v != 50 {
			t.Fatalf("GOGC during the merges %v, want 50", during)
		}
	}
	if v := gcPercent(); v != 100 {
		t.Fatalf("GOGC after the pass %d, want 100", v)
	}
}

// TestMergeOffHeapOnlyOnOwnReaderAndWriter: a merge that needs iceberg-go's
// reader (an input written under an older schema) runs on the heap, where
// iceberg-go's goroutines may keep what they read; it still loses no row.
func TestMergeOffHeapOnlyOnOwnReaderAndWriter(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
	})
	var fs []*sink.Flush
	for i := uint64(1); i <= 3; i++ {
		f := w1Flush(i, testSources, i, 1, 500)
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	addColumn(t, s, "users", "reviewed_by")
	offHeap := 0
	s.afterOffHeapMerge = func(offheap.Stats, int64) { offHeap++ }
	tbl, tasks := tableTasks(t, s, "users")
	gr, err := s.mergeGroup(context.Background(), tbl, tasks)
	if err != nil {
		t.Fatal(err)
	}
	var rows, want int64
	for _, df := range gr.NewDataFiles {
		rows += df.Count()
	}
	for _, task := range tasks {
		want += task.File.Count()
	}
	if len(tasks) != 3 || rows != want {
		t.Fatalf("the merge of %d files wrote %d rows, want %d", len(tasks), rows, want)
	}
	// It was tried off the heap, found an input it cannot read itself,
	// and ran again on the heap: once off the heap, and nothing mapped.
	if offHeap != 1 || s.MaintenanceTotals().MergeOffHeapBytes != 0 {
		t.Fatalf("off-heap attempts %d, bytes mapped after %d", offHeap, s.MaintenanceTotals().MergeOffHeapBytes)
	}
}

// TestMergeOffHeapWriteFailure: a merge whose write fails midway leaves no
// file and gives its memory back (what its aborted writer still held is
// retired: no memory, its addresses kept until freed).
func TestMergeOffHeapWriteFailure(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		c.TableProperties = iceberg.Properties{"write.parquet.page-size-bytes": "4096"}
	})
	mustCommit(t, s, w1Flush(1, testSources, 1, 1, 4000))
	mustCommit(t, s, w1Flush(2, testSources, 2, 1, 4000))
	tbl, tasks := tableTasks(t, s, "users")
	dir, _, one := onePartition(tbl.Metadata(), []iceberg.DataFile{tasks[0].File})
	if !one {
		t.Fatal("not one partition")
	}
	mem := offheap.New(nil)
	ctx := compute.WithAllocator(context.Background(), mem)
	target, err := newFileTarget(ctx, tbl, dir, 8<<10, 0)
	if err != nil {
		t.Fatal(err)
	}
	target.rowGroupBytes = 4 << 10
	m, err := newMerger(ctx, tbl, tasks, readDirectOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeSortedFiles(ctx, target, failingAt(m, 3)); err == nil {
		t.Fatal("the write did not fail")
	}
	m.close()
	if mem.Stats().Peak < offheap.MinMapped {
		t.Fatal("the merge mapped nothing")
	}
	out := mem.Close()
	// Finalizers release what the readers pooled; after them only what
	// nothing can free is left, retired.
	runtime.GC()
	runtime.GC()
	st := mem.Stats()
	t.Logf("outstanding at close %d bytes; after collections %+v", out, st)
	if st.InUse != st.Retired {
		t.Errorf("%d bytes in use after Close, %d retired", st.InUse, st.Retired)
	}
}

// TestOffHeapMergeReadsWhatTheHeapMergeReads: off the heap, a merge of
// staged files of large values (buffers well above offheap.MinMapped,
// reused from batch to batch) yields exactly the rows, values and order
// it yields on the heap.
func TestOffHeapMergeReadsWhatTheHeapMergeReads(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	commitBlobFiles(t, s, 4, 3000)
	heap, _ := mergedRowsWith(t, context.Background(), s, "blobs", readDirectOrScan)
	mem := offheap.New(nil)
	off, direct := mergedRowsWith(t, compute.WithAllocator(context.Background(), mem), s, "blobs", readDirectOnly)
	if !direct {
		t.Fatal("the off-heap merge did not read directly")
	}
	if st := mem.Stats(); st.Peak < 1<<20 {
		t.Fatalf("the merge mapped at most %d bytes: not the path under test", st.Peak)
	}
	if out := mem.Close(); out != 0 {
		t.Errorf("%d bytes still handed out after the merge closed", out)
	}
	if len(off) != len(heap) {
		t.Fatalf("%d rows off the heap, %d on it", len(off), len(heap))
	}
	for i := range heap {
		if off[i] != heap[i] {
			t.Fatalf("row %d differs:\noff the heap %.200s\non the heap  %.200s", i, off[i], heap[i])
		}
	}
}
