package iceberg

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCommitClaimsEveryEpoch: a flush holds batches of one source accepted
// under two epochs of this instance's lease, with another instance's epoch
// in between (the lease expired mid-flush, the other instance took the
// source, then this one took it back). The claim of the older epoch no
// longer holds, so the commit is fenced and the error names that claim,
// with and without the elected committer, and nothing is written. Without
// the committer publishing every epoch's claim (it kept only the highest,
// which holds), its part was committed: the committer case failed.
func TestCommitClaimsEveryEpoch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committer bool
	}{{"direct", false}, {"elected committer", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir := t.TempDir()
			s := openTestSink(t, dir, func(c *Config) {
				c.CatalogURI = dsn
				c.Warehouse = "file://" + dir + "/warehouse"
				if tc.committer {
					c.ElectedCommitter = true
					c.CommitterInterval = testCommitterInterval
					c.InstanceID = "inst-a"
				}
			})
			a := openStore(t, dsn, "inst-a")
			b := openStore(t, dsn, "inst-b")
			src := testSources[:1]
			id := src[0].id
			var epochs []uint64
			for _, st := range []*coord.Store{a, b, a} {
				l, err := st.Acquire(ctx, id, coord.Resume{})
				if err != nil {
					t.Fatal(err)
				}
				epochs = append(epochs, l.Epoch)
				if len(epochs) < 3 {
					if err := st.Release(ctx, id, l.Epoch); err != nil {
						t.Fatal(err)
					}
				}
			}
			old, cur := epochs[0], epochs[2]
			claims := fence.Claims{Owner: "inst-a", Claims: []fence.Claim{{Source: id, Epoch: old}, {Source: id, Epoch: cur}}}
			f := w1Flush(1, src, 1, 4, 8)
			// Staging creates the tables; the commit carries the claims.
			st, err := s.Stage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.CommitStaged(fence.With(ctx, claims), []sink.Staged{st}, sink.CommitInfo{ID: f.ID, Reason: "scheduled"})
			var fe *fence.Error
			if !errors.As(err, &fe) {
				t.Fatalf("commit of batches accepted under epochs %d and %d, lease at %d: %v, want a fence error", old, cur, cur, err)
			}
			if len(fe.Failed) != 1 || fe.Failed[0] != (fence.Claim{Source: id, Epoch: old}) {
				t.Errorf("fence error names %+v, want only %s@%d", fe.Failed, id, old)
			}
			if got := scanKeys(t, s); len(got) != 0 {
				t.Errorf("%d rows written by a fenced commit", len(got))
			}
		})
	}
}
