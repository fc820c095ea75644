package iceberg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// More tests of the elected committer's mirror (committermirror_test.go
// has the helpers): fenced parts, parts with mirror changes alone, orphan
// cleanup, role hand-over, a committer without the mirror.

// TestElectedCommitterMirrorFencedPart: a's source moves to another
// instance between the committer's claim pre-check and its changelog
// commit. a's part is fenced there, before any mirror commit: none of its
// changes reach the mirror (whose watermarks do not name a's source, so a
// successor's batches of the same numbers are not skipped), its change
// file is deleted, and b's part, over the same keys, is committed to both
// tables. Applying a fenced part's changes would not be harmless: the
// changelog never gets them, and the mirror's watermark would hide the
// successor's batches. (With the mirror committed before the changelog,
// as first designed, a's changes are in the mirror.)
func TestElectedCommitterMirrorFencedPart(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	move, moved := moveBeforeFirstCommit(dsn, "src-a")
	insts := openCommitterInstances(t, dsn, []string{"inst-a", "inst-b"}, func(c *Config) {
		c.Mirror = true
		c.BeforeTableCommit = move
	})
	a, b := insts[0], insts[1]
	a.acquire(t, "src-a")
	b.acquire(t, "src-b")
	g := newKeyedGen(3, 20)
	fa := g.flush("users", 1_700_000_000_000, 30, "src-a")
	fb := g.flush("users", 1_700_000_000_000, 30, "src-b")
	models := newMirrorModels()
	models.apply(fb)
	sta, err := a.s.Stage(ctx, fa)
	if err != nil {
		t.Fatal(err)
	}
	stb, err := b.s.Stage(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg         sync.WaitGroup
		errA, errB error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, errA = a.commitStaged(cctx, fa, sta)
	}()
	go func() {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, errB = b.commitStaged(cctx, fb, stb)
	}()
	wg.Wait()
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	var fe *fence.Error
	if !errors.As(errA, &fe) {
		t.Fatalf("a's commit after its source moved: %v, want a fence error", errA)
	}
	if errB != nil {
		t.Fatalf("b's commit: %v", errB)
	}
	diffKeys(t, flushKeys(fb), scanKeys(t, b.s))
	models.check(t, b.s, "users")
	mtbl, err := b.s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	mw, err := watermarksFromProps(mtbl.Properties())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mw["src-a"]; ok {
		t.Errorf("mirror watermarks %v name the fenced source", mw)
	}
	if left := changeFilesLeft(t, b.s); len(left) > 0 {
		t.Errorf("change files left (the fenced part's?): %v", left)
	}
	if byState, _ := partCounts(t, dsn); byState[partFenced] != 1 || byState[partCommitted] != 1 {
		t.Errorf("parts %v, want one fenced and one committed", byState)
	}
}

// TestElectedCommitterMirrorOnlyPart: the changelog holds a flush that the
// mirror does not (committed with the mirror off). Staging it again with
// the mirror on makes a part with mirror changes and no data files: it is
// published and applied, the changelog is unchanged, and the mirror equals
// the model. Before, such a part was not published (parts without files
// were skipped), and the mirror would have stayed empty.
func TestElectedCommitterMirrorOnlyPart(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	g := newKeyedGen(11, 25)
	f := g.flush("users", 1_700_000_000_000, 40, "src-a")
	off := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) { c.Mirror = false })
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := off.commit(cctx, f); err != nil {
		t.Fatal(err)
	}
	if err := off.s.Close(); err != nil {
		t.Fatal(err)
	}
	on := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", nil)
	st, err := on.s.Stage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	stg := st.(*staged)
	if len(stg.tables) != 1 || len(stg.tables[0].files) != 0 || stg.tables[0].mirror == nil {
		t.Fatalf("staged %+v, want one table with mirror changes and no files", stg.tables)
	}
	res, err := on.commitStaged(cctx, f, st)
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsWritten != 0 {
		t.Errorf("%d changelog rows written again", res.RowsWritten)
	}
	models := newMirrorModels()
	models.apply(f)
	models.check(t, on.s, "users")
	checkMirrorMarks(t, on.s, "users")
	diffKeys(t, flushKeys(f), scanKeys(t, on.s))
	if left := changeFilesLeft(t, on.s); len(left) > 0 {
		t.Errorf("change files left: %v", left)
	}
}

// TestElectedCommitterMirrorOrphanCleanup: orphan cleanup, run by another
// instance (which does not know the stager's files), keeps the change file
// of a part still staged and removes a change file no part names.
func TestElectedCommitterMirrorOrphanCleanup(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	// An hour's interval: the first part is committed (its slot has no
	// snapshot), the second waits for the next slot.
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) { c.CommitterInterval = time.Hour })
	g := newKeyedGen(13, 25)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := a.commit(cctx, g.flush("users", 1_700_000_000_000, 20, "src-a")); err != nil {
		t.Fatal(err)
	}
	f2 := g.flush("users", 1_700_000_001_000, 20, "src-a")
	st, err := a.s.Stage(ctx, f2)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithTimeout(ctx, 4*time.Second)
	defer stop()
	if _, err := a.commitStaged(wctx, f2, st); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second commit in the slot: %v, want it waiting", err)
	}
	left := changeFilesLeft(t, a.s)
	if len(left) != 1 {
		t.Fatalf("change files %v, want the staged part's", left)
	}
	stray := filepath.Join(filepath.Dir(left[0]), "0000-no-part.parquet")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := openMirrorInstance(t, dsn, wh, "inst-b", "src-b", func(c *Config) {
		c.CommitterInterval = time.Hour
		c.Maintenance.OrphanAge = time.Second
	})
	time.Sleep(1500 * time.Millisecond)
	if _, err := b.s.removeOrphans(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left[0]); err != nil {
		t.Errorf("the staged part's change file: %v", err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a change file no part names was kept (%v)", err)
	}
}

// TestElectedCommitterMirrorIndexAfterHandOver: the committer role of a
// table moves from a to b and back. a's in-memory index missed b's
// commit; a must not take a change older than b's row for new (the
// mirror keeps b's). Before dropForeignIndex, a applied its older change
// over b's newer row (checked: the test fails without it).
func TestElectedCommitterMirrorIndexAfterHandOver(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	hour := func(c *Config) { c.CommitterInterval = time.Hour }
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", hour)
	b := openMirrorInstance(t, dsn, wh, "inst-b", "src-b", hour)
	models := newMirrorModels()
	commit := func(s *Sink, src string, batch, entry, eventMs uint64, after string) {
		t.Helper()
		tb := sink.Table{Name: "users", Rows: []sink.Row{{SourceID: src, BatchSeq: batch, Entry: codec.Entry{
			Sequence: entry, Timestamp: eventMs, Table: []byte("users"), RowID: []byte("k1"), Op: codec.OpUpdate, After: []byte(after)}}}}
		models.apply(&sink.Flush{Tables: []sink.Table{tb}})
		mp := foldMirror(&tb, nil, nil)
		if _, err := s.commitMirror(ctx, "users", []*mirrorPart{mp}, sink.CommitInfo{ID: batch}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	commit(a.s, "src-a", 1, 1, 1_000, `{"v":1}`)
	commit(b.s, "src-b", 1, 1, 3_000, `{"v":3}`) // the role moved to b
	commit(a.s, "src-a", 2, 2, 2_000, `{"v":2}`) // and back to a: older than b's row
	models.check(t, a.s, "users")
}

// TestElectedCommitterMirrorOffCommitter: the table's committer runs
// without the mirror (the mirror being turned on one instance at a time)
// while another instance has it on. That instance's parts are not left
// waiting: the committer applies them with its own (default) mirror
// options, and the mirror holds their changes alone.
func TestElectedCommitterMirrorOffCommitter(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	g := newKeyedGen(17, 25)
	off := openMirrorInstance(t, dsn, wh, "inst-off", "src-b", func(c *Config) { c.Mirror = false })
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// off commits first: it holds the table's committer role from then on.
	if _, err := off.commit(cctx, g.flush("users", 1_700_000_000_000, 20, "src-b")); err != nil {
		t.Fatal(err)
	}
	on := openMirrorInstance(t, dsn, wh, "inst-on", "src-a", nil)
	f := g.flush("users", 1_700_000_001_000, 30, "src-a")
	if _, err := on.commit(cctx, f); err != nil {
		t.Fatal(err)
	}
	if off.s.CommitterTotals().Commits != 2 || on.s.CommitterTotals().Commits != 0 {
		t.Fatalf("committer commits: off %+v, on %+v; want off's both", off.s.CommitterTotals(), on.s.CommitterTotals())
	}
	models := newMirrorModels()
	models.apply(f)
	models.check(t, on.s, "users")
}
