package iceberg

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCatalogCommitContention measures the shared catalog's commit
// throughput for issue 14's projection (docs/scale-out.md): K sinks, as K
// instances would, commit to the same eight W1 tables through one
// PostgreSQL catalog as fast as they can, for K = 1, 2, 4 and 8. Each commit
// is one 80-entry batch of its own source, so one flush is eight table
// commits. It reports table commits per second, the catalog's conflicts
// (attempts refused because another sink had moved the table, then
// replayed by iceberg-go) and the commit time's p50 and p99, and checks that
// every sink's last batch is in every table's watermarks.
//
// It is a measurement, not a check of speed: it runs only with
// LAKEHOUSE_CATALOG_LOAD=1 (and LAKEHOUSE_TEST_POSTGRES_DSN), for
// LAKEHOUSE_CATALOG_LOAD_SECONDS per K (default 20).
func TestCatalogCommitContention(t *testing.T) {
	if os.Getenv("LAKEHOUSE_CATALOG_LOAD") != "1" {
		t.Skip("a measurement: set LAKEHOUSE_CATALOG_LOAD=1")
	}
	dsn := os.Getenv("LAKEHOUSE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("LAKEHOUSE_TEST_POSTGRES_DSN not set")
	}
	dur := 20 * time.Second
	if v := os.Getenv("LAKEHOUSE_CATALOG_LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("LAKEHOUSE_CATALOG_LOAD_SECONDS=%q: want a positive number of seconds", v)
		}
		dur = time.Duration(n) * time.Second
	}
	t.Logf("%-3s %12s %10s %10s %14s %9s %9s %9s", "K", "commits/s", "attempts", "conflicts", "conflicts/cmt", "p50", "p99", "max")
	for _, k := range []int{1, 2, 4, 8} {
		r := runCommitContention(t, dsn, k, dur)
		t.Logf("%-3d %12.1f %10d %10d %14.3f %9s %9s %9s", k, r.perSecond, r.attempts, r.conflicts,
			float64(r.conflicts)/float64(max(r.commits, 1)), r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond),
			r.max.Round(time.Millisecond))
	}
}

type contentionResult struct {
	commits, attempts, conflicts int64
	perSecond                    float64
	p50, p99, max                time.Duration
}

func runCommitContention(t *testing.T, dsn string, k int, dur time.Duration) contentionResult {
	t.Helper()
	dir := t.TempDir()
	ns := fmt.Sprintf("cdc_load_%d_%s", k, randomSuffix(t))
	sinks := make([]*Sink, k)
	for i := range sinks {
		sinks[i] = openTestSink(t, fmt.Sprintf("%s/instance-%d", dir, i), func(c *Config) {
			c.CatalogURI = dsn
			c.Warehouse = "file://" + dir + "/warehouse"
			c.Namespace = ns
			c.CommitAttempts = 20
		})
	}
	// Create the tables before the clock starts: creation is not a commit.
	first := w1Flush(1, []testSource{{id: "setup"}}, 1, 1, 80)
	if _, err := sinks[0].Commit(context.Background(), first); err != nil {
		t.Fatalf("K=%d: create tables: %v", k, err)
	}

	var (
		mu        sync.Mutex
		durations []time.Duration
		lastBatch = make([]uint64, k)
		wg        sync.WaitGroup
		errs      = make(chan error, k)
	)
	start := time.Now()
	deadline := start.Add(dur)
	for i, s := range sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := []testSource{{id: fmt.Sprintf("committer-%d", i), offset: int64(i+1) * 10_000_000}}
			var mine []time.Duration
			for b := uint64(1); time.Now().Before(deadline); b++ {
				res, err := s.Commit(context.Background(), w1Flush(b+1, src, b, 1, 80))
				if err != nil {
					errs <- fmt.Errorf("committer %d batch %d: %w", i, b, err)
					return
				}
				for _, c := range res.Commits {
					mine = append(mine, c.Duration)
				}
				lastBatch[i] = b
			}
			mu.Lock()
			durations = append(durations, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatalf("K=%d: %v", k, err)
	}

	var r contentionResult
	for _, s := range sinks {
		ct := s.CatalogTotals()
		r.attempts += ct.Attempts
		r.conflicts += ct.Conflicts
	}
	r.commits = int64(len(durations))
	r.perSecond = float64(r.commits) / elapsed.Seconds()
	slices.Sort(durations)
	if n := len(durations); n > 0 {
		r.p50, r.p99, r.max = durations[n/2], durations[min(n-1, n*99/100)], durations[n-1]
	}
	// Every committer's last batch is in every table's watermarks.
	tables := 0
	err := sinks[0].eachTable(context.Background(), func(id table.Identifier, _ *table.Table, wm map[string]sink.Watermark) error {
		tables++
		for i, b := range lastBatch {
			src := fmt.Sprintf("committer-%d", i)
			if w := wm[src]; w.BatchSeq != b {
				t.Errorf("K=%d: table %v: %s's watermark is batch %d, want %d", k, id, src, w.BatchSeq, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tables != 8 {
		t.Errorf("K=%d: %d tables, want 8", k, tables)
	}
	return r
}
