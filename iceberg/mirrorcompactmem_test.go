package iceberg

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMirrorCompactionMemoryBounded: a mirror compaction reads its
// partition in small batches, one file at a time, in pages of about 256
// KiB, and holds a few batches for the writer, whatever the size of the
// partition's files. With iceberg-go's defaults (batches of 131,072 rows, a
// reader per core, 64 batches for the writer, pages checked every 20,000
// rows) it held more than the partition's rows decoded.
func TestMirrorCompactionMemoryBounded(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = -1
		c.MirrorCompactDeleteFiles = 2
		c.MirrorScanBudget = -1
		c.Maintenance.CompactDisabled = true
	})
	rnd := rand.NewChaCha8([32]byte{3})
	blob := make([]byte, 700)
	const files, keys = 3, 4096
	model := mirrorModel{}
	commit := func(f *sink.Flush) {
		t.Helper()
		applyFlush(model, f)
		mustCommit(t, s, f)
	}
	for i := range uint64(files) {
		rows := make([]sink.Row, keys)
		for j := range uint64(keys) {
			seq := i*keys + j + 1
			rows[j] = sink.Row{SourceID: "src", BatchSeq: i + 1, Entry: codec.Entry{Sequence: seq, Timestamp: 1_700_000_000_000 + seq,
				Op: codec.OpInsert, Table: []byte("t"), RowID: fmt.Appendf(nil, "k%d", seq),
				After: blobRow(rnd, blob)}}
		}
		commit(&sink.Flush{ID: i + 1, Time: time.Now(), Tables: []sink.Table{{Name: "t", Rows: rows}}})
	}
	// Three commits of updates: three equality delete files, over the
	// threshold of 2.
	for i := uint64(files + 1); i <= files+3; i++ {
		commit(updateFlush(i, "t", []string{"k1", "k2", fmt.Sprintf("k%d", i*1000)}, int(i)))
	}
	mem := &peakAllocator{Allocator: memory.NewGoAllocator()}
	ctx := compute.WithAllocator(context.Background(), mem)
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 1 {
		t.Fatalf("%d mirror compactions, want 1", n)
	}
	tbl, err := s.LoadMirrorTable(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
	// The partition's rows decoded are about 1 KB each: 12 MB. A few
	// batches of compactBatchRows rows are a few MB: 10 MB were held here
	// (13 under the race detector), 23 MB with iceberg-go's defaults. With
	// four times the rows, the defaults held 93 MB and these 14. (The
	// writer's pages come from arrow-go's own pool, not from this
	// allocator.)
	const limit = 18 << 20
	t.Logf("the mirror compaction's allocator held at most %d bytes, for %d rows of about 1 KB", mem.peak.Load(), files*keys)
	if mem.peak.Load() > limit {
		t.Errorf("the mirror compaction held up to %d bytes, more than %d: it holds the partition's rows, not a few batches", mem.peak.Load(), limit)
	}
}
