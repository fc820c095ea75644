package iceberg

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/apache/iceberg-go/table"
)

// lostReply makes the next armed catalog commit that succeeds fail for its
// caller, as a connection broken after the database committed does.
type lostReply struct{ armed atomic.Bool }

var errLostReply = errors.New("test: connection reset after the catalog's commit")

func (l *lostReply) hook(_ table.Identifier, err error) error {
	if err == nil && l.armed.CompareAndSwap(true, false) {
		return errLostReply
	}
	return err
}

// checkFilesExist fails t for each file of tbl's current snapshot (data
// and delete files) that is not on disk.
func checkFilesExist(t *testing.T, tbl *table.Table) {
	t.Helper()
	tasks, err := tbl.Scan().PlanFiles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		files := append([]string{task.File.FilePath()}, nil...)
		for _, d := range append(append(task.DeleteFiles, task.EqualityDeleteFiles...), task.DeletionVectorFiles...) {
			files = append(files, d.FilePath())
		}
		for _, f := range files {
			if _, err := os.Stat(localPath(f)); err != nil {
				t.Errorf("the current snapshot refers to a file that is gone: %v", err)
			}
		}
	}
}

// TestCompactionWithUnknownOutcomeKeepsItsFiles: a compaction whose
// catalog commit was applied but reported failed (the reply lost) leaves
// the files it wrote. It deleted them before, as if nothing had been
// committed, and the table's current snapshot then referred to files that
// no longer existed: every read of the table failed.
func TestCompactionWithUnknownOutcomeKeepsItsFiles(t *testing.T) {
	ctx := context.Background()
	var lost lostReply
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactMinFiles = 4
		c.AfterCatalogCommit = lost.hook
	})
	fs := commitN(t, s, 6)
	lost.armed.Store(true)
	_, err := s.compactTable(ctx, "users")
	if !errors.Is(err, errLostReply) || !errors.Is(err, errCommitUnknown) {
		t.Fatalf("compaction with its reply lost: %v, want the lost reply, marked as an unknown outcome", err)
	}
	if n := len(liveFiles(t, s, "users")); n != 1 {
		t.Fatalf("users has %d files: the compaction did not land, the test tests nothing", n)
	}
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	checkFilesExist(t, tbl)
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
}

// TestMirrorCompactionWithUnknownOutcomeKeepsItsFiles is
// TestCompactionWithUnknownOutcomeKeepsItsFiles for a mirror table's
// compaction. Two instances committing one mirror (--elected-committer=false)
// met it at shutdown: the compaction's context was cancelled while
// PostgreSQL committed, and the mirror's new files were deleted.
func TestMirrorCompactionWithUnknownOutcomeKeepsItsFiles(t *testing.T) {
	ctx := context.Background()
	const buckets, threshold = 4, 3
	var lost lostReply
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = threshold
		c.MirrorPartitionBuckets = buckets
		c.MirrorScanBudget = -1
		c.AfterCatalogCommit = lost.hook
	})
	model := commitHotPartition(t, s, buckets, threshold)
	lost.armed.Store(true)
	err := s.CompactMirrors(ctx)
	if !errors.Is(err, errLostReply) || !errors.Is(err, errCommitUnknown) {
		t.Fatalf("mirror compaction with its reply lost: %v, want the lost reply, marked as an unknown outcome", err)
	}
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if mirrorDeleteFiles(tbl) != 0 {
		t.Fatalf("the mirror has %d delete files: the compaction did not land, the test tests nothing", mirrorDeleteFiles(tbl))
	}
	checkFilesExist(t, tbl)
	checkMirror(t, readMirror(t, tbl), model)
}
