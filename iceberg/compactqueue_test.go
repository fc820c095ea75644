package iceberg

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
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
// merge held about 64 of them.
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
	gr, err := s.mergeGroup(compute.WithAllocator(context.Background(), mem), tbl, tasks)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, df := range gr.NewDataFiles {
		n += df.Count()
	}
	if n != files*rows {
		t.Fatalf("the merge wrote %d rows, want %d", n, files*rows)
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
