package iceberg

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// lostReply makes an armed catalog commit that succeeds fail for its
// caller, as a connection broken after the database committed does.
type lostReply struct {
	countdown atomic.Int64 // the countdown-th successful commit fails; 0: none
	mu        sync.Mutex
	lost      []string // the tables whose commit replies were lost
}

var errLostReply = errors.New("test: connection reset after the catalog's commit")

// arm makes the n-th successful catalog commit from now fail.
func (l *lostReply) arm(n int) { l.countdown.Store(int64(n)) }

func (l *lostReply) hook(ident table.Identifier, commit func() error) error {
	err := commit()
	if err == nil && l.countdown.Load() > 0 && l.countdown.Add(-1) == 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lost = append(l.lost, strings.Join(ident, "."))
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
		files := []string{task.File.FilePath()}
		for _, d := range slices.Concat(task.DeleteFiles, task.EqualityDeleteFiles, task.DeletionVectorFiles) {
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
		c.AroundCatalogCommit = lost.hook
	})
	fs := commitN(t, s, 6)
	lost.arm(1)
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
		c.AroundCatalogCommit = lost.hook
	})
	model := commitHotPartition(t, s, buckets, threshold)
	lost.arm(1)
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

// TestCommitWithUnknownOutcomeAppliedOnce: a Commit whose changelog or
// mirror commit was applied but reported failed, committed again as the
// server does with a failed flush, holds every change once and leaves the
// mirror equal to the model: the watermarks the applied commit set skip
// what it committed.
func TestCommitWithUnknownOutcomeAppliedOnce(t *testing.T) {
	ctx := context.Background()
	var lost lostReply
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = 2
		c.AroundCatalogCommit = lost.hook
	})
	model := mirrorModel{}
	var flushes []*sink.Flush
	keys := []string{"a", "b", "c", "d", "e"}
	for i := 1; i <= 8; i++ {
		f := updateFlush(uint64(i), "t", keys[i%2:i%2+3], i)
		applyFlush(model, f)
		flushes = append(flushes, f)
		lost.arm(i%2 + 1) // the changelog's commit, or the mirror's
		before := len(lost.lost)
		if _, err := s.Commit(ctx, f); !errors.Is(err, errLostReply) {
			t.Fatalf("flush %d with a commit's reply lost: %v, want the lost reply", i, err)
		}
		if len(lost.lost) != before+1 {
			t.Fatalf("flush %d: no reply lost", i)
		}
		mustCommit(t, s, f)
	}
	lost.arm(0)
	if !slices.Contains(lost.lost, "cdc.t") || !slices.Contains(lost.lost, "cdc_current.t") {
		t.Fatalf("replies lost for %v: want the changelog's and the mirror's", lost.lost)
	}
	diffKeys(t, flushKeys(flushes...), scanKeys(t, s))
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}

// TestCompactionCommitOutlivesCancellation: a compaction cancelled while
// its catalog commit runs (a graceful stop) still commits: the commit does
// not see the cancellation, so its outcome is known. Before, the catalog
// commit ran on the cancelled context: the commit failed, or, cancelled in
// the middle of the database's COMMIT, its outcome was unknown
// (TestScaleOutMirrorDirectCommits).
func TestCompactionCommitOutlivesCancellation(t *testing.T) {
	for _, mirror := range []bool{false, true} {
		t.Run(map[bool]string{false: "changelog", true: "mirror"}[mirror], func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stopping atomic.Bool
			const buckets, threshold = 4, 3
			s := openTestSink(t, t.TempDir(), func(c *Config) {
				c.Maintenance.CompactMinFiles = 4
				c.Mirror = mirror
				c.MirrorCompactDeleteFiles = threshold
				c.MirrorPartitionBuckets = buckets
				c.MirrorScanBudget = -1
				// The stop comes as the catalog commits, which then
				// sees the cancellation it was given, if any.
				c.AroundCatalogCommit = func(_ table.Identifier, commit func() error) error {
					if stopping.Load() {
						cancel()
					}
					return commit()
				}
			})
			if !mirror {
				fs := commitN(t, s, 6)
				stopping.Store(true)
				if _, err := s.compactTable(ctx, "users"); err != nil {
					t.Fatalf("compaction cancelled during its commit: %v", err)
				}
				if n := len(liveFiles(t, s, "users")); n != 1 {
					t.Errorf("users has %d files, want the compaction's one", n)
				}
				diffKeys(t, flushKeys(fs...), scanKeys(t, s))
				return
			}
			model := commitHotPartition(t, s, buckets, threshold)
			stopping.Store(true)
			if err := s.CompactMirrors(ctx); err != nil {
				t.Fatalf("mirror compaction cancelled during its commit: %v", err)
			}
			tbl, err := s.LoadMirrorTable(context.Background(), "t")
			if err != nil {
				t.Fatal(err)
			}
			if n := mirrorDeleteFiles(tbl); n != 0 {
				t.Errorf("the mirror has %d delete files: the compaction did not commit", n)
			}
			checkFilesExist(t, tbl)
			checkMirror(t, readMirror(t, tbl), model)
		})
	}
}
