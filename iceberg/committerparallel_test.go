package iceberg

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// TestElectedCommitterTablesInParallel: the elected committer commits the
// tables of a round in parallel too. BeforeTableCommit holds each table's
// commit until all four are in theirs (or, should a round have found only
// some of the tables published, for a while): with serial commits never
// more than one is. The mirrors equal the model and every change is in
// its changelog once.
func TestElectedCommitterTablesInParallel(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	var (
		mu               sync.Mutex
		inFlight, most   int
		allIn            = make(chan struct{})
		allInOnce        sync.Once
		holdAtMost       = 5 * time.Second
		commitsInOverlap atomic.Int64
	)
	insts := openCommitterInstances(t, dsn, []string{"inst-a"}, func(c *Config) {
		c.Mirror, c.MirrorPartitionBuckets = true, 2
		c.CommitParallelism = 4
		c.BeforeTableCommit = func(string) error {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			if inFlight == len(parTables) {
				allInOnce.Do(func() { close(allIn) })
			}
			mu.Unlock()
			select {
			case <-allIn:
				commitsInOverlap.Add(1)
			case <-time.After(holdAtMost):
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
			return nil
		}
	})
	ci := insts[0]
	ci.acquire(t, "src-a")
	ci.acquire(t, "src-b")
	g := newKeyedGen(11, 30)
	models := newModels()
	var total int64
	for i := range 3 {
		f := parFlush(g, models, i)
		total += flushRows(f)
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := ci.commit(cctx, f)
		cancel()
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if res.RowsWritten != flushRows(f) {
			t.Errorf("commit %d: %d rows written, want %d", i, res.RowsWritten, flushRows(f))
		}
	}
	mu.Lock()
	if most < 2 {
		t.Errorf("at most %d table commit at a time: the committer commits its tables one after the other", most)
	}
	mu.Unlock()
	t.Logf("at most %d table commits at once; %d commits met all four", most, commitsInOverlap.Load())
	checkMirrorState(t, ci.s, parTables, models, total)
}
