package iceberg

import (
	"context"
	"testing"
)

// TestMirrorCompactionChecksOnlyWhenDue: at 4 delete files, with commits
// that each add a delete file to every partition, the background
// compaction measures the mirror after the first commit with deletes, then
// not until a partition could hold 4 (three commits later), when it
// compacts; after a compaction it measures once more. Before, it measured
// after every commit that added delete files: 12 checks for these 12
// commits instead of 6, and the same 3 compactions.
func TestMirrorCompactionChecksOnlyWhenDue(t *testing.T) {
	ctx := context.Background()
	const threshold = 4
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = threshold
		c.MirrorScanBudget = -1
	})
	keys := keysInBuckets("k", 40, 1, 0, true) // spread over the default buckets
	model := mirrorModel{}
	// want: the checks and compactions in all after each update commit.
	want := []struct{ checks, compactions int64 }{
		{1, 0}, {1, 0}, {1, 0}, {2, 1},
		{3, 1}, {3, 1}, {3, 1}, {4, 2},
		{5, 2}, {5, 2}, {5, 2}, {6, 3},
	}
	for i := 1; i <= len(want)+1; i++ {
		f := updateFlush(uint64(i), "t", keys, i)
		applyFlush(model, f)
		mustCommit(t, s, f)
		if err := s.CompactMirrors(ctx); err != nil {
			t.Fatal(err)
		}
		tot := s.MirrorTotals()
		if i == 1 {
			if tot.CompactionChecks != 0 {
				t.Fatalf("%d checks after the first commit, which wrote no delete file", tot.CompactionChecks)
			}
			continue
		}
		if w := want[i-2]; tot.CompactionChecks != w.checks || tot.Compactions != w.compactions {
			t.Fatalf("after update commit %d: %d checks, %d compactions; want %d, %d",
				i-1, tot.CompactionChecks, tot.Compactions, w.checks, w.compactions)
		}
		// No partition ever holds more than the threshold.
		tbl, err := s.LoadMirrorTable(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		parts, _, err := mirrorPartitions(ctx, tbl)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if p.deleteFiles >= threshold {
				t.Fatalf("after update commit %d, partition %s has %d delete files", i-1, p.key, p.deleteFiles)
			}
		}
	}
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}
