package iceberg

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/internal/testing/logbuf"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestElectedCommitterMirrorConcurrentCommitters: two committers of one
// mirror at once (a role holder whose session broke mid-commit while the
// next holder already commits). a decides its commit of k1 (event time 2 s)
// against the mirror as it was (k1 at 1 s: the change is new) and stops
// just before its catalog commit; b commits k1 at 3 s meanwhile; then a's
// commit goes on. Its catalog commit conflicts, and iceberg-go replayed it
// on b's snapshot as it was decided: its equality delete removed b's newer
// row and its older row stayed (the mirror held k1 at 2 s, the model 3 s).
// Now a replay onto anything but compactions is refused and a's commit is
// decided again against the table's current state: its change is stale,
// and the mirror equals the model. A compaction by b meanwhile instead
// lets a's commit be replayed as it was decided (no second decision).
func TestElectedCommitterMirrorConcurrentCommitters(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool // b compacts the mirror instead of committing k1
		redo    bool // a's commit is decided again
	}{{"another commit", false, true}, {"a compaction", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			testConcurrentMirrorCommit(t, tc.compact, tc.redo)
		})
	}
}

func testConcurrentMirrorCommit(t *testing.T, compact, redo bool) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	var (
		hold    atomic.Bool
		logs    logbuf.Buffer
		entered = make(chan struct{}, 1)
		proceed = make(chan struct{})
	)
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) {
		c.CommitterInterval = time.Hour
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.BeforeMirrorCommit = func(string) error {
			if hold.CompareAndSwap(true, false) {
				entered <- struct{}{}
				<-proceed
			}
			return nil
		}
	})
	b := openMirrorInstance(t, dsn, wh, "inst-b", "src-b", func(c *Config) { c.CommitterInterval = time.Hour })
	models := newMirrorModels()
	change := func(src string, batch, entry, eventMs uint64, after string) *mirrorPart {
		return k1Change(models, src, batch, entry, eventMs, after)
	}
	commit := func(s *Sink, mp *mirrorPart, id uint64) error { return commitUsersMirror(ctx, s, mp, id) }
	if err := commit(a.s, change("src-a", 1, 1, 1_000, `{"v":1}`), 1); err != nil {
		t.Fatal(err)
	}
	hold.Store(true)
	pa := change("src-a", 2, 2, 2_000, `{"v":2}`)
	done := make(chan error, 1)
	go func() { done <- commit(a.s, pa, 2) }()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("a's commit ended before its catalog commit: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("a's commit never reached its catalog commit")
	}
	var err error
	if compact {
		var n int
		if n, err = b.s.compactMirror(ctx, "users", 1); err == nil && n == 0 {
			t.Error("b's compaction rewrote nothing")
		}
	} else {
		err = commit(b.s, change("src-b", 1, 1, 3_000, `{"v":3}`), 1)
	}
	close(proceed)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a's commit: %v", err)
	}
	models.check(t, a.s, "users")
	if got := a.s.CatalogTotals().Conflicts; got == 0 {
		t.Errorf("a's catalog commits had no conflict: the race did not happen")
	}
	decidedAgain := strings.Contains(logs.String(), "deciding it again")
	if decidedAgain != redo {
		t.Errorf("a's commit decided again: %v, want %v", decidedAgain, redo)
	}
	// a's commit is recorded all the same: its watermark.
	mtbl, err := a.s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	wm, err := watermarksFromProps(mtbl.Properties())
	if err != nil {
		t.Fatal(err)
	}
	if wm["src-a"].BatchSeq != 2 || (!compact && wm["src-b"].BatchSeq != 1) {
		t.Errorf("mirror watermarks %+v, want src-a at batch 2 (and src-b at 1)", wm)
	}
}

// k1Change is an update of key k1 of table users from src, applied to
// models and folded for a mirror commit.
func k1Change(models *mirrorModels, src string, batch, entry, eventMs uint64, after string) *mirrorPart {
	tb := sink.Table{Name: "users", Rows: []sink.Row{{SourceID: src, BatchSeq: batch, Entry: codec.Entry{
		Sequence: entry, Timestamp: eventMs, Table: []byte("users"), RowID: []byte("k1"), Op: codec.OpUpdate, After: []byte(after)}}}}
	models.apply(&sink.Flush{Tables: []sink.Table{tb}})
	return foldMirror(&tb, nil, nil)
}

// commitUsersMirror commits mp to the users mirror of s.
func commitUsersMirror(ctx context.Context, s *Sink, mp *mirrorPart, id uint64) error {
	_, err := s.commitMirror(ctx, "users", []*mirrorPart{mp}, sink.CommitInfo{ID: id}, nil, nil)
	return err
}

// TestElectedCommitterIdleRoundIsNoPass: the committer loop polls ten times
// a second; a round with nothing to commit starts no commit pass, which the
// mirror compaction would yield to. A compaction called during such a poll
// failed with errCommitPassRunning (TestElectedCommitterMirrorConcurrentCommitters
// flaked so). A round that commits is a pass.
func TestElectedCommitterIdleRoundIsNoPass(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := openMirrorInstance(t, dsn, "file://"+t.TempDir()+"/warehouse", "inst-a", "src-a", func(c *Config) { c.CommitterInterval = time.Hour })
	started := a.s.passes.startedCount
	before := started()
	if err := a.s.committerRound(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * committerPoll(time.Hour)) // the loop's own polls
	if got := started(); got != before {
		t.Fatalf("%d commit passes started by rounds with nothing to commit", got-before)
	}
	f := w1Flush(1, []testSource{{id: "src-a"}}, 1, 1, 8)
	st, err := a.s.Stage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := fence.Claims{Owner: a.id, Claims: []fence.Claim{{Source: "src-a", Epoch: a.epochs["src-a"]}}}
	if _, err := a.s.CommitStaged(fence.With(cctx, c), []sink.Staged{st}, sink.CommitInfo{ID: f.ID, Reason: sink.ReasonManual}); err != nil {
		t.Fatal(err)
	}
	if started() == before {
		t.Error("a round that committed started no commit pass")
	}
}

// TestMirrorSchemaCommitOverAnotherWritersRows: a decides its commit of k1
// (event time 2 s, with a new column) against the mirror holding k1 at 1 s;
// b commits k1 at 3 s before a's schema commit. The schema commit requires
// only the schema, so it succeeded on top of b's rows, and a's row delta,
// built on the table it returned, committed at the first attempt as
// decided: its equality delete removed b's newer row (the mirror held k1 at
// 2 s, the model 3 s; TestScaleOutMirrorDirectCommits failed so). Now a's
// commit is decided again: its change is stale, and the mirror equals the
// model, with a's new column added.
func TestMirrorSchemaCommitOverAnotherWritersRows(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	var logs logbuf.Buffer
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) {
		c.CommitterInterval = time.Hour
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	b := openMirrorInstance(t, dsn, wh, "inst-b", "src-b", func(c *Config) { c.CommitterInterval = time.Hour })
	models := newMirrorModels()
	change := func(src string, batch, entry, eventMs uint64, after string) *mirrorPart {
		return k1Change(models, src, batch, entry, eventMs, after)
	}
	commit := func(s *Sink, mp *mirrorPart, id uint64) error { return commitUsersMirror(ctx, s, mp, id) }
	if err := commit(a.s, change("src-a", 1, 1, 1_000, `{"v":1}`), 1); err != nil {
		t.Fatal(err)
	}
	pa := change("src-a", 2, 2, 2_000, `{"v":2,"w":"new"}`)
	pb := change("src-b", 1, 1, 3_000, `{"v":3}`)
	var bErr error
	raced := false
	a.s.afterMirrorDecided = func(string) {
		if !raced {
			raced = true
			bErr = commit(b.s, pb, 1)
		}
	}
	if err := commit(a.s, pa, 2); err != nil {
		t.Fatalf("a's commit: %v", err)
	}
	if bErr != nil {
		t.Fatalf("b's commit: %v", bErr)
	}
	models.check(t, a.s, "users")
	decidedAgain := strings.Contains(logs.String(), "deciding it again")
	if !decidedAgain {
		t.Error("a's commit was not decided again")
	}
	mtbl, err := a.s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mtbl.Schema().FindFieldByName("w"); !ok {
		t.Errorf("the mirror has no column w: %s", mtbl.Schema())
	}
	wm, err := watermarksFromProps(mtbl.Properties())
	if err != nil {
		t.Fatal(err)
	}
	if wm["src-a"].BatchSeq != 2 || wm["src-b"].BatchSeq != 1 {
		t.Errorf("mirror watermarks %+v, want src-a at batch 2 and src-b at 1", wm)
	}
}
