package iceberg

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// peakAllocator counts the bytes its allocator holds, and the most it held.
type peakAllocator struct {
	memory.Allocator
	cur, peak atomic.Int64
}

func (a *peakAllocator) add(n int) {
	c := a.cur.Add(int64(n))
	for p := a.peak.Load(); c > p && !a.peak.CompareAndSwap(p, c); p = a.peak.Load() {
	}
}

func (a *peakAllocator) Allocate(size int) []byte {
	a.add(size)
	return a.Allocator.Allocate(size)
}

func (a *peakAllocator) Reallocate(size int, b []byte) []byte {
	a.add(size - len(b))
	return a.Allocator.Reallocate(size, b)
}

func (a *peakAllocator) Free(b []byte) {
	a.add(-len(b))
	a.Allocator.Free(b)
}

// TestCompactionWriteQueueBounded: the merged batches waiting for the
// Parquet writer are at most compactWriteQueue. Each is a slice that keeps
// an input's whole batch (compactBatchRows rows) alive, and the merge
// outpaces the writer: with iceberg-go's default queue of 64 batches, this
// merge held 24 (26 MB, against 14 with the queue of 4).
func TestCompactionWriteQueueBounded(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactDisabled = true
		// Row groups of a few batches: the writer's buffered row group
		// stays small beside the queue.
		c.TableProperties = map[string]string{table.ParquetRowGroupLimitKey: "2048"}
	})
	const files, rows = 4, 8192
	commitBlobFiles(t, s, files, rows)
	tbl, tasks := tableTasks(t, s, "blobs")
	mem := &peakAllocator{Allocator: memory.NewGoAllocator()}
	// The queue is iceberg-go's writer's, which a merge uses when it cannot
	// write on its own (writeMerge): the merge's inputs read directly, its
	// output written through iceberg-go, all on the context's allocator
	// (mergeGroup would merge off the heap, on its own writer).
	ctx := compute.WithAllocator(context.Background(), mem)
	var inputs []iceberg.DataFile
	for _, task := range tasks {
		inputs = append(inputs, task.File)
	}
	m, err := newMerger(ctx, tbl, tasks, readDirectOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	written, _, err := s.writeMergeThroughIceberg(ctx, tbl, m, inputs)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for df, err := range written {
		if err != nil {
			t.Fatal(err)
		}
		n += df.Count()
	}
	if n != files*rows {
		t.Fatalf("the merge wrote %d rows, want %d", n, files*rows)
	}
	if mem.peak.Load() == 0 {
		t.Fatal("the merge allocated nothing on the context's allocator: not the path under test")
	}
	// A batch is about 1 KB a row. Each input holds a batch and its pages,
	// the writer a batch and a row group: 10 batches leave room for a
	// queue of a few (not the queue's constant: the test checks it).
	batch := int64(compactBatchRows) << 10
	limit := (2*files + 10) * batch
	t.Logf("the merge's allocator held at most %d bytes (%d batches of %d rows)", mem.peak.Load(), mem.peak.Load()/batch, compactBatchRows)
	if mem.peak.Load() > limit {
		t.Errorf("the merge held up to %d bytes, more than %d: merged batches pile up before the writer", mem.peak.Load(), limit)
	}
}
