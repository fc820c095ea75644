package coord_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

func open(t *testing.T, dsn, owner string, orphanWait time.Duration) *coord.Store {
	t.Helper()
	s, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: owner, Addr: owner + ":1",
		TTL: time.Second, OrphanWait: orphanWait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// deadOwner leaves source's lease expired with instance a, which committed
// batches up to 5.
func deadOwner(t *testing.T, a *coord.Store, source string) coord.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := a.Acquire(ctx, source, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.MarkCommitted(ctx, []coord.Mark{{Source: source, Epoch: l.Epoch, Seq: 5, Entry: 50}}, coord.Window{}); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestOrphanedBatchesKeepTheSource: an expired lease whose owner acked
// batches above its committed mark moves only to a client that can resend
// them; a client that cannot is refused (the batches are in the dead
// owner's log), and the owner, back, reclaims its lease at the same epoch.
func TestOrphanedBatchesKeepTheSource(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := open(t, dsn, "inst-a", time.Hour)
	b := open(t, dsn, "inst-b", time.Hour)
	la := deadOwner(t, a, "ok-mode")
	deadOwner(t, a, "persisted-mode")
	deadOwner(t, a, "all-committed")
	deadOwner(t, a, "legacy-orphan")
	deadOwner(t, a, "legacy-committed")
	time.Sleep(1500 * time.Millisecond) // past the 1-s TTL: a is gone

	// Batches 6..8 acked by a, not committed, not held by the client.
	_, err := b.Acquire(ctx, "ok-mode", coord.Resume{LastAcked: 8})
	var orphan *coord.OrphanError
	if !errors.As(err, &orphan) || orphan.Owner != "inst-a" || orphan.Committed != 5 || orphan.LastAcked != 8 {
		t.Fatalf("acquire of an orphaned source: %v, want an OrphanError (owner inst-a, committed 5, acked 8)", err)
	}
	if time.Until(orphan.Until) < 50*time.Minute {
		t.Errorf("OrphanError.Until = %v, want about an hour from now", orphan.Until)
	}
	// The client holds everything above the persisted 5: it can resend.
	if l, err := b.Acquire(ctx, "persisted-mode", coord.Resume{LastAcked: 8, ResendFrom: 6}); err != nil || l.CommittedSeq != 5 {
		t.Fatalf("acquire by a client that can resend: %+v %v", l, err)
	}
	// Nothing acked above the mark: nothing to lose.
	if _, err := b.Acquire(ctx, "all-committed", coord.Resume{LastAcked: 5}); err != nil {
		t.Fatalf("acquire with everything committed: %v", err)
	}
	// Entry mode (a legacy child through the bridge): the batch numbers
	// are the server's, the entry mark decides.
	if _, err := b.Acquire(ctx, "legacy-orphan", coord.Resume{LastAckedEntry: 80}); !errors.As(err, &orphan) ||
		orphan.CommittedEntry != 50 || !strings.Contains(err.Error(), "entries 51..80") {
		t.Fatalf("acquire of an entry-mode source with acked entries above the mark: %v, want an OrphanError naming entries 51..80", err)
	}
	if _, err := b.Acquire(ctx, "legacy-committed", coord.Resume{LastAckedEntry: 50}); err != nil {
		t.Fatalf("acquire of an entry-mode source with every acked entry committed: %v", err)
	}
	// a comes back on its data directory: its lease is still its own.
	if ok, err := a.Reclaim(ctx, "ok-mode", la.Epoch); err != nil || !ok {
		t.Fatalf("reclaim by the returning owner: %v %v", ok, err)
	}
	// And b is now redirected to it.
	var held *coord.HeldError
	if _, err := b.Acquire(ctx, "ok-mode", coord.Resume{LastAcked: 8}); !errors.As(err, &held) || held.Owner != "inst-a" {
		t.Fatalf("acquire after the owner returned: %v, want a HeldError", err)
	}
}

// TestOrphanWaitEnds: after OrphanWait the source moves anyway, and with a
// zero OrphanWait it moves at once.
func TestOrphanWaitEnds(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := open(t, dsn, "inst-a", 0)
	b := open(t, dsn, "inst-b", time.Second)
	c := open(t, dsn, "inst-c", 0)
	la := deadOwner(t, a, "s1")
	deadOwner(t, a, "s2")
	time.Sleep(1500 * time.Millisecond)
	var orphan *coord.OrphanError
	if _, err := b.Acquire(ctx, "s1", coord.Resume{LastAcked: 8}); !errors.As(err, &orphan) {
		t.Fatalf("acquire within the wait: %v, want an OrphanError", err)
	}
	time.Sleep(time.Until(orphan.Until) + 500*time.Millisecond)
	lb, err := b.Acquire(ctx, "s1", coord.Resume{LastAcked: 8})
	if err != nil || lb.Epoch != la.Epoch+1 {
		t.Fatalf("acquire after the wait: %+v %v", lb, err)
	}
	if _, err := c.Acquire(ctx, "s2", coord.Resume{LastAcked: 8}); err != nil {
		t.Fatalf("acquire with no wait: %v", err)
	}
	// The old owner's epoch is fenced: it cannot reclaim.
	if ok, err := a.Reclaim(ctx, "s1", la.Epoch); err != nil || ok {
		t.Fatalf("reclaim after the source moved: %v %v", ok, err)
	}
}
