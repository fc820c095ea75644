package iceberg

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/testing/logbuf"
)

// TestCompactionLosingARaceIsNoFailure: two maintainers compact the same
// table at once (`lakehouse maintain` beside a server on the embedded
// catalog, which has no maintenance lock). The one that commits second
// finds its inputs gone: it drops its rewrite, removes the files it wrote,
// and reports no error. It failed before, with iceberg-go's "cannot delete
// files that do not belong to the table": `lakehouse maintain` exited
// non-zero and the server counted a maintenance failure, for a table that
// was compacted.
func TestCompactionLosingARaceIsNoFailure(t *testing.T) {
	ctx := context.Background()
	var logs logbuf.Buffer
	var s *Sink
	raced := false
	s = openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactMinFiles = 4
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.BeforeRewriteCommit = func(name string) error {
			if name != "users" || raced {
				return nil
			}
			raced = true
			// The other maintainer plans the same files and commits first.
			res, err := s.compactTable(ctx, name)
			if err != nil || res.filesRemoved == 0 {
				t.Errorf("the other maintainer's compaction: %+v, %v", res, err)
			}
			return nil
		}
	})
	fs := commitN(t, s, 6)
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(localPath(tbl.Location()), "data")
	res, err := s.compactTable(ctx, "users")
	if err != nil {
		t.Fatalf("the compaction that lost the race: %v", err)
	}
	if !raced {
		t.Fatal("the race did not happen")
	}
	if res.filesRemoved != 0 || res.filesAdded != 0 {
		t.Errorf("the compaction that lost the race reports %+v", res)
	}
	live := liveFiles(t, s, "users")
	if len(live) != 1 {
		t.Errorf("users has %d files, want the winner's one", len(live))
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
	// On disk: the 6 staged files (still in older snapshots) and the
	// winner's output; the loser's output is gone.
	onDisk := countParquet(t, dataDir)
	if onDisk != 6+len(live) {
		t.Errorf("%d data files on disk, want %d: the dropped rewrite left its files", onDisk, 6+len(live))
	}
	if !strings.Contains(logs.String(), "compaction dropped: another maintainer rewrote its files first") {
		t.Errorf("the dropped rewrite is not logged:\n%s", logs.String())
	}
}
