package iceberg

import (
	"context"
	"fmt"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// keysInBuckets returns n keys "<prefix>-<i>" whose bucket[buckets] is
// (want) or is not (!want) bucket b.
func keysInBuckets(prefix string, n, buckets int, b int32, want bool) []string {
	bucket := iceberg.BucketTransform{NumBuckets: buckets}.Transformer(iceberg.PrimitiveTypes.String)
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if (bucket(k).Val == b) == want {
			keys = append(keys, k)
		}
	}
	return keys
}

// updateFlush updates (or inserts) keys with a value of round.
func updateFlush(id uint64, tableName string, keys []string, round int) *sink.Flush {
	rows := make([]sink.Row, len(keys))
	for i, k := range keys {
		seq := id*10_000 + uint64(i)
		rows[i] = sink.Row{SourceID: "src", BatchSeq: id, Entry: codec.Entry{Sequence: seq, Timestamp: 1_700_000_000_000 + seq,
			Op: codec.OpUpdate, Table: []byte(tableName), RowID: []byte(k), After: fmt.Appendf(nil, `{"round":%d}`, round)}}
	}
	return &sink.Flush{ID: id, Time: time.Now(), Tables: []sink.Table{{Name: tableName, Rows: rows}}}
}

// partitionFiles lists the data file paths of each partition.
func partitionFiles(t *testing.T, tbl *table.Table) map[string][]string {
	t.Helper()
	fs, err := tbl.FS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mans, err := tbl.CurrentSnapshot().Manifests(fs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range mans {
		for e, err := range m.Entries(fs, true) {
			if err != nil {
				t.Fatal(err)
			}
			if e.DataFile().ContentType() != iceberg.EntryContentData {
				continue
			}
			key := partitionKey(tbl.Metadata(), e.DataFile())
			out[key] = append(out[key], e.DataFile().FilePath())
		}
	}
	return out
}

// commitHotPartition commits to mirror "t" 60 keys over buckets
// partitions, then threshold+1 updates of the 20 keys of bucket 1: that
// partition is over a delete-file threshold of threshold, the others have
// no delete file. It returns the model of the mirror.
func commitHotPartition(t *testing.T, s *Sink, buckets, threshold int) mirrorModel {
	t.Helper()
	hot := keysInBuckets("k", 20, buckets, 1, true)
	cold := keysInBuckets("k", 40, buckets, 1, false)
	model := mirrorModel{}
	commit := func(f *sink.Flush) {
		t.Helper()
		applyFlush(model, f)
		mustCommit(t, s, f)
	}
	commit(updateFlush(1, "t", append(append([]string{}, hot...), cold...), 1))
	for i := 2; i <= 2+threshold; i++ {
		commit(updateFlush(uint64(i), "t", hot, i))
	}
	return model
}

// TestMirrorCompactionPerPartition: commits never compact (compaction used
// to run inside the commit and rewrite the whole table); the background
// pass rewrites only the partition over its delete-file threshold and
// leaves the other partitions' files as they were; the contents stay right.
func TestMirrorCompactionPerPartition(t *testing.T) {
	ctx := context.Background()
	const buckets, threshold = 4, 3
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = threshold
		c.MirrorPartitionBuckets = buckets
		c.MirrorScanBudget = -1
	})
	model := commitHotPartition(t, s, buckets, threshold)
	if n := s.MirrorTotals().Compactions; n != 0 {
		t.Fatalf("%d compactions ran inside commits", n)
	}
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if spec := tbl.Spec(); spec.NumFields() != 1 || spec.Field(0).Transform.String() != fmt.Sprintf("bucket[%d]", buckets) {
		t.Fatalf("partition spec %v, want bucket[%d](row_id)", spec, buckets)
	}
	parts, _, err := mirrorPartitions(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	before := partitionFiles(t, tbl)
	hotKey := ""
	for key, p := range parts {
		if p.deleteFiles > threshold {
			hotKey = key
		} else if p.deleteFiles != 0 {
			// The first commit inserted new keys: no equality deletes.
			t.Errorf("partition %s: %d delete files, want none", key, p.deleteFiles)
		}
	}
	if hotKey == "" || len(parts) != buckets {
		t.Fatalf("partitions %v: want %d, one over the threshold", parts, buckets)
	}

	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	tbl, err = s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
	after := partitionFiles(t, tbl)
	for key, files := range before {
		if key == hotKey {
			if fmt.Sprint(after[key]) == fmt.Sprint(files) || len(after[key]) != 1 {
				t.Errorf("hot partition %s: data files %v after compaction, want one new one", key, after[key])
			}
			continue
		}
		if fmt.Sprint(after[key]) != fmt.Sprint(files) {
			t.Errorf("partition %s below the threshold had its data rewritten: %v -> %v", key, files, after[key])
		}
	}
	// The hot partition's delete files go, one per update commit.
	if tot := s.MirrorTotals(); tot.Compactions != 1 || tot.DeleteFilesRemoved != threshold+1 {
		t.Errorf("totals %+v: want one compaction removing %d delete files", tot, threshold+1)
	}
}

// TestMirrorScanBudget: a partition under the delete-file threshold is
// compacted once a scan of it would apply more delete rows than the budget.
func TestMirrorScanBudget(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = 100
		c.MirrorPartitionBuckets = -1 // unpartitioned: one partition
		c.MirrorScanBudget = 50
	})
	keys := keysInBuckets("k", 20, 1, 0, true)
	model := mirrorModel{}
	cost := func() int64 {
		tbl, err := s.LoadMirrorTable(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if !tbl.Spec().IsUnpartitioned() {
			t.Fatalf("spec %v, want unpartitioned", tbl.Spec())
		}
		parts, _, err := mirrorPartitions(ctx, tbl)
		if err != nil || len(parts) != 1 {
			t.Fatalf("partitions %v, %v", parts, err)
		}
		for _, p := range parts {
			return p.scanCost
		}
		return 0
	}
	for i := 1; i <= 3; i++ {
		f := updateFlush(uint64(i), "t", keys, i)
		applyFlush(model, f)
		mustCommit(t, s, f)
	}
	// Commit 2's 20 deletes apply to commit 1's file; commit 3's to
	// commits 1 and 2's: 60 delete rows, over the budget of 50.
	if c := cost(); c != 60 {
		t.Fatalf("scan cost %d, want 60", c)
	}
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 1 {
		t.Fatalf("%d compactions, want 1 (over the scan budget)", n)
	}
	if c := cost(); c != 0 {
		t.Errorf("scan cost %d after compaction", c)
	}
	tbl, _ := s.LoadMirrorTable(ctx, "t")
	checkMirror(t, readMirror(t, tbl), model)
}

// TestMirrorCompactionWaitsForCommitPass: the background compaction starts
// no rewrite while a commit pass runs (a rewrite holds the mirror's commit
// lock, and each mirror commit of the pass would wait for it); a commit
// during the pass queues its table without waking the compactor, and the
// pass's end wakes it.
func TestMirrorCompactionWaitsForCommitPass(t *testing.T) {
	ctx := context.Background()
	s := openCompactorTestSink(t)
	keys := keysInBuckets("k", 10, 1, 0, true)
	model := mirrorModel{}
	for i := 1; i <= 4; i++ {
		f := updateFlush(uint64(i), "t", keys, i)
		applyFlush(model, f)
		mustCommit(t, s, f)
	}
	woken := func() bool {
		select {
		case <-s.mirrorCompact.wake:
			return true
		default:
			return false
		}
	}
	if !woken() {
		t.Fatal("the commits' end did not wake the compactor")
	}

	s.passes.start()
	s.mirrorCompact.note("t", mirrorGrowth{})
	if woken() {
		t.Error("a mirror commit during a pass woke the compactor")
	}
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 0 {
		t.Fatalf("%d compactions while a commit pass ran", n)
	}
	s.passes.end()
	if !woken() {
		t.Fatal("the pass's end did not wake the compactor for the table it put off")
	}
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 1 {
		t.Errorf("%d compactions after the pass, want 1", n)
	}
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}

// TestMirrorCompactionPutOffBounded: with commit passes back to back (here
// one that never ends), the background compaction yields to them only for
// maxPutOff; then it compacts during a pass. Before, it yielded for ever,
// and the mirror's delete files grew with every commit.
func TestMirrorCompactionPutOffBounded(t *testing.T) {
	ctx := context.Background()
	s := openCompactorTestSink(t)
	s.mirrorCompact.maxPutOff = 200 * time.Millisecond
	keys := keysInBuckets("k", 10, 1, 0, true)
	model := mirrorModel{}
	commit := func(from, to int) {
		for i := from; i <= to; i++ {
			f := updateFlush(uint64(i), "t", keys, i)
			applyFlush(model, f)
			mustCommit(t, s, f)
		}
	}
	s.passes.start()
	commit(1, 4)
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 0 {
		t.Fatalf("%d compactions as a pass started", n)
	}
	time.Sleep(300 * time.Millisecond)
	s.mirrorCompact.note("t", mirrorGrowth{})
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 1 {
		t.Fatalf("%d compactions after yielding for longer than maxPutOff, want 1", n)
	}
	// Having caught up, it yields to passes again.
	commit(5, 6)
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.MirrorTotals().Compactions; n != 1 {
		t.Errorf("%d compactions right after catching up, want 1", n)
	}
	s.passes.end()
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}

// openCompactorTestSink opens a sink with mirrors whose partitions are due
// for compaction at 2 delete files (no scan budget).
func openCompactorTestSink(t *testing.T) *Sink {
	return openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = 2
		c.MirrorScanBudget = -1
	})
}
