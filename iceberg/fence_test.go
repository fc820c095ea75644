package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestFencedCommit: a commit whose lease claims no longer hold (another
// instance took the source) changes nothing, through iceberg-go's own SQL
// catalog commit; the new owner's commit goes through. It fails if the
// catalog ever stops running its update in a transaction begun with the
// commit's context (the check would then not run and the zombie commit
// would succeed).
func TestFencedCommit(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	dir := t.TempDir()
	s := openTestSink(t, dir, func(c *Config) {
		c.CatalogURI = dsn
		c.Warehouse = "file://" + dir + "/warehouse"
	})
	a := openStore(t, dsn, "inst-a")
	b := openStore(t, dsn, "inst-b")
	src := testSources[:1]
	la, err := a.Acquire(ctx, src[0].id, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	claimsA := fence.Claims{Owner: "inst-a", Claims: []fence.Claim{{Source: src[0].id, Epoch: la.Epoch}}}
	f1 := w1Flush(1, src, 1, 1, 8)
	if _, err := s.Commit(fence.With(ctx, claimsA), f1); err != nil {
		t.Fatalf("owner's commit: %v", err)
	}
	// b cannot take a live lease.
	var held *coord.HeldError
	if _, err := b.Acquire(ctx, src[0].id, coord.Resume{}); !errors.As(err, &held) || held.Owner != "inst-a" {
		t.Fatalf("acquire of a live lease: %v", err)
	}
	if err := a.Release(ctx, src[0].id, la.Epoch); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, src[0].id, coord.Resume{})
	if err != nil || lb.Epoch != la.Epoch+1 {
		t.Fatalf("takeover: %+v %v", lb, err)
	}
	// The zombie's commit is fenced and leaves the tables as they were.
	f2 := w1Flush(2, src, 2, 1, 8)
	_, err = s.Commit(fence.With(ctx, claimsA), f2)
	var fe *fence.Error
	if !errors.Is(err, fence.ErrFenced) || !errors.As(err, &fe) || len(fe.Failed) != 1 {
		t.Fatalf("zombie commit: %v", err)
	}
	diffKeys(t, flushKeys(f1), scanKeys(t, s))
	// The sink had staged the files; a zombie reopened in a new sink (as a
	// restarted zombie would be) is fenced just the same.
	claimsB := fence.Claims{Owner: "inst-b", Claims: []fence.Claim{{Source: src[0].id, Epoch: lb.Epoch}}}
	s2 := openTestSink(t, dir, func(c *Config) {
		c.CatalogURI = dsn
		c.Warehouse = "file://" + dir + "/warehouse"
	})
	if _, err := s2.Commit(fence.With(ctx, claimsB), f2); err != nil {
		t.Fatalf("new owner's commit: %v", err)
	}
	diffKeys(t, flushKeys(f1, f2), scanKeys(t, s2))
}

// TestAcquireWaitsBoundedForCommit: a commit holding a lease row (FOR SHARE,
// as the fence check does) delays a takeover at most the lock timeout, and
// the takeover succeeds once the commit ends.
func TestAcquireWaitsBoundedForCommit(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := openStore(t, dsn, "inst-a")
	b, err := coord.Open(ctx, coord.Options{DSN: dsn, Owner: "inst-b", TTL: time.Second, LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	la, err := a.Acquire(ctx, "s1", coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "s1", la.Epoch); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, leaseCheckSQL, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := b.Acquire(ctx, "s1", coord.Resume{}); err == nil {
		t.Fatal("acquire succeeded while a commit held the row")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("acquire waited %v", d)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if lb, err := b.Acquire(ctx, "s1", coord.Resume{}); err != nil || lb.Epoch != la.Epoch+1 {
		t.Fatalf("acquire after the commit: %+v %v", lb, err)
	}
}

func openStore(t *testing.T, dsn, owner string) *coord.Store {
	t.Helper()
	s, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: owner, Addr: owner + ":1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestZombieOverlapIsFenced: a zombie instance's staged batches that the
// source's new owner committed in part (it resent them after the move) are
// refused as fenced, not as a commit error the zombie would retry forever:
// the watermark check that finds the overlap runs before the catalog's
// fenced transaction, so it asks the fence itself.
func TestZombieOverlapIsFenced(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Sink {
		return openTestSink(t, dir, func(c *Config) {
			c.CatalogURI = dsn
			c.Warehouse = "file://" + dir + "/warehouse"
		})
	}
	zombie, owner := open(), open()
	a := openStore(t, dsn, "inst-a")
	b := openStore(t, dsn, "inst-b")
	src := testSources[:1]
	la, err := a.Acquire(ctx, src[0].id, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	claimsA := fence.Claims{Owner: "inst-a", Claims: []fence.Claim{{Source: src[0].id, Epoch: la.Epoch}}}
	// a stages batches 1..10 and pauses before committing them.
	staged, err := zombie.Stage(fence.With(ctx, claimsA), w1Flush(1, src, 1, 10, 8))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, src[0].id, la.Epoch); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, src[0].id, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	claimsB := fence.Claims{Owner: "inst-b", Claims: []fence.Claim{{Source: src[0].id, Epoch: lb.Epoch}}}
	// b gets batches 1..5 again from the client and commits them.
	if _, err := owner.Commit(fence.With(ctx, claimsB), w1Flush(2, src, 1, 5, 8)); err != nil {
		t.Fatal(err)
	}
	_, err = zombie.CommitStaged(fence.With(ctx, claimsA), []sink.Staged{staged}, sink.CommitInfo{ID: 1, Reason: "test"})
	if !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("zombie commit of batches the new owner committed in part: %v, want a fence error", err)
	}
	diffKeys(t, flushKeys(w1Flush(2, src, 1, 5, 8)), scanKeys(t, owner))
}
