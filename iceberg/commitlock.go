package iceberg

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/prometheus/client_golang/prometheus"
)

// tableLocks are the commit locks of the sink's tables, one per Iceberg
// table (a changelog and its mirror are two): ingest commits and maintenance
// commits of one table take turns, so that they never conflict inside one
// process, while different tables commit at the same time (a commit's
// tables run in parallel, see commitparallel.go, and maintenance of one
// table does not hold back another's ingest commit).
type tableLocks struct {
	// ingestWait is how long ingest commits waited for a lock
	// (lakehouse_commit_lock_wait_seconds): what maintenance holding a
	// table costs the commits a child waits for.
	ingestWait prometheus.Histogram

	mu sync.Mutex
	// slots holds a one-slot semaphore per table identifier ("cdc.users"),
	// created on first use; one entry per table the sink ever committed,
	// so as many as the catalog's tables. Guarded by mu.
	slots map[string]chan struct{}
}

// slot returns the table's semaphore.
func (l *tableLocks) slot(ident table.Identifier) chan struct{} {
	key := strings.Join(ident, ".")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.slots == nil {
		l.slots = make(map[string]chan struct{})
	}
	c, ok := l.slots[key]
	if !ok {
		c = make(chan struct{}, 1)
		l.slots[key] = c
	}
	return c
}

// lockTable takes the commit lock of the table ident, or gives up when ctx
// ends: whoever holds it (a maintenance job on a stalled store, until its
// own deadline) must not keep an ingest commit past the commit's deadline.
// Release it with the returned function.
func (s *Sink) lockTable(ctx context.Context, ident table.Identifier) (unlock func(), err error) {
	c := s.commitLocks.slot(ident)
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the commit lock of %s: %w", strings.Join(ident, "."), context.Cause(ctx))
	}
}

// newIngestWait returns the histogram of tableLocks.ingestWait.
func newIngestWait() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "lakehouse_commit_lock_wait_seconds",
		Help: "Time a flush's table commit waited for the table's commit lock, held by maintenance (a compaction or expiry commit, a mirror compaction's rewrite) or another commit.",
		// 1 ms to about 16 s.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	})
}

// lockTableForIngest is lockTable for an ingest commit (a flush's, or the
// elected committer's): the wait is observed in
// lakehouse_commit_lock_wait_seconds.
func (s *Sink) lockTableForIngest(ctx context.Context, ident table.Identifier) (unlock func(), err error) {
	start := time.Now()
	unlock, err = s.lockTable(ctx, ident)
	if err == nil {
		s.commitLocks.ingestWait.Observe(time.Since(start).Seconds())
	}
	return unlock, err
}
