package iceberg

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	icebergio "github.com/apache/iceberg-go/io"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestFailedStageDeletesItsFiles fails a stage in its third table, after
// the first two tables' data files were written: those files, which no
// snapshot ever referenced, are deleted at once rather than left for
// orphan cleanup a day later; nothing committed is touched, and the stage
// succeeds once the store recovers.
func TestFailedStageDeletesItsFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var failing atomic.Bool
	var fails atomic.Int64
	two := testSources[:2]
	f1 := w1Flush(1, two, 1, 1, 16)
	f2 := w1Flush(2, two, 2, 2, 16)
	if len(f2.Tables) < 3 {
		t.Fatalf("W1 flush has %d tables", len(f2.Tables))
	}
	failAt := "/" + sink.SanitizeName(f2.Tables[2].Name) + "/data/"
	s := openTestSink(t, dir, func(c *Config) {
		c.WrapIO = func(fsys icebergio.IO) icebergio.IO {
			return flakyIO{WriteFileIO: fsys.(icebergio.WriteFileIO), failing: &failing, mode: "create", match: failAt, fails: &fails}
		}
	})
	mustCommit(t, s, f1)
	committed := dataFilesOnDisk(t, dir)

	failing.Store(true)
	if _, err := s.Stage(ctx, f2); !errors.Is(err, errInjected) && !errors.Is(err, ErrIncompleteWrite) {
		t.Fatalf("Stage while %s fails: %v", failAt, err)
	}
	if fails.Load() == 0 {
		t.Fatal("no injected failure was hit")
	}
	if got := dataFilesOnDisk(t, dir); !slices.Equal(got, committed) {
		t.Errorf("data files after the failed stage:\n%v\nwant the committed ones only:\n%v", got, committed)
	}
	diffKeys(t, flushKeys(f1), scanKeys(t, s))

	failing.Store(false)
	st, err := s.Stage(ctx, f2)
	if err != nil {
		t.Fatalf("Stage after recovery: %v", err)
	}
	res, err := s.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: 2})
	if err != nil || res.RowsWritten != flushRows(f2) {
		t.Fatalf("CommitStaged: %+v, %v", res, err)
	}
	diffKeys(t, flushKeys(f1, f2), scanKeys(t, s))
}

// dataFilesOnDisk lists the Parquet files under a sink's data directory.
func dataFilesOnDisk(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".parquet") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
