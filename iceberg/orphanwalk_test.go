package iceberg

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	icebergio "github.com/apache/iceberg-go/io"
)

type listWriteIO interface {
	icebergio.ListableIO
	icebergio.WriteFileIO
}

// vanishingIO removes a directory named dir from disk when the walk first
// visits it, before the walk reads it: as the committer deleting a part's
// change files (data/mirror-changes/) while orphan cleanup lists the table.
type vanishingIO struct {
	listWriteIO
	dir     string
	removed *atomic.Bool
}

func (v vanishingIO) WalkDir(root string, fn fs.WalkDirFunc) error {
	return v.listWriteIO.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && filepath.Base(path) == v.dir && !v.removed.Load() {
			if rerr := os.RemoveAll(strings.TrimPrefix(path, "file://")); rerr != nil {
				return rerr
			}
			v.removed.Store(true)
		}
		return fn(path, d, err)
	})
}

// TestOrphanCleanupDirectoryVanishes: a directory of the table that
// disappears while orphan cleanup walks the table's location is skipped.
// Before, the walk's "file does not exist" failed the cleanup: with mirrors
// on (the default) and the elected committer on S3, every maintenance pass
// that met an emptied data/mirror-changes/ failed
// (TestS3PostgresScaleOut: "maintenance did not both compact and expire").
func TestOrphanCleanupDirectoryVanishes(t *testing.T) {
	ctx := context.Background()
	var removed atomic.Bool
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.WrapIO = func(fsys icebergio.IO) icebergio.IO {
			l, ok := fsys.(listWriteIO)
			if !ok {
				t.Fatalf("table IO %T cannot list and write", fsys)
			}
			return vanishingIO{listWriteIO: l, dir: "vanishing", removed: &removed}
		}
	})
	mustCommit(t, s, w1Flush(1, testSources[:1], 1, 1, 8))
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimPrefix(tbl.Location(), "file://"), "data", "vanishing")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "change.parquet"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.removeOrphans(ctx, "users"); err != nil {
		t.Fatalf("orphan cleanup: %v", err)
	}
	if !removed.Load() {
		t.Fatal("the walk never reached the directory")
	}
}
