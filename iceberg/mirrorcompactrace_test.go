package iceberg

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/testing/logbuf"
)

// TestMirrorCompactionLosingARaceIsNoFailure: the server and `lakehouse
// maintain` (two sinks on one embedded catalog, which has no maintenance
// lock) compact the same mirror partition at once. The one that commits
// second must not fail, and the mirror must stay right: every key once,
// with its latest values.
func TestMirrorCompactionLosingARaceIsNoFailure(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const buckets, threshold = 4, 3
	mirrorCfg := func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = threshold
		c.MirrorPartitionBuckets = buckets
		c.MirrorScanBudget = -1
	}
	var logs logbuf.Buffer
	other := openTestSink(t, dir, mirrorCfg)
	raced := false
	s := openTestSink(t, dir, func(c *Config) {
		mirrorCfg(c)
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.BeforeRewriteCommit = func(name string) error {
			if raced {
				return nil
			}
			raced = true
			// `lakehouse maintain` plans the same partition and commits
			// first.
			if err := other.Maintain(ctx, MaintainOptions{MirrorDeletes: true}); err != nil {
				t.Errorf("the other maintainer's mirror compaction: %v", err)
			}
			if other.MirrorTotals().Compactions == 0 {
				t.Error("the other maintainer compacted nothing")
			}
			return nil
		}
	})
	model := commitHotPartition(t, s, buckets, threshold)
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(localPath(tbl.Location()), "data")
	before := countParquet(t, dataDir)
	if err := s.CompactMirrors(ctx); err != nil {
		t.Fatalf("the mirror compaction that lost the race: %v", err)
	}
	if !raced {
		t.Fatal("the race did not happen")
	}
	if tbl, err = s.LoadMirrorTable(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
	if n := mirrorDeleteFiles(tbl); n != 0 {
		t.Errorf("%d delete files left: the winner's rewrite should have dropped them all", n)
	}
	// The winner rewrote the hot partition into one file; the loser's
	// rewrite is gone from disk.
	if after := countParquet(t, dataDir); after != before+1 {
		t.Errorf("%d parquet files under the mirror, want %d: the dropped rewrite left its files", after, before+1)
	}
	if !strings.Contains(logs.String(), "mirror compaction dropped") {
		t.Errorf("the dropped rewrite is not logged:\n%s", logs.String())
	}
}

// countParquet counts the Parquet files under dir.
func countParquet(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".parquet") {
			n++
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
