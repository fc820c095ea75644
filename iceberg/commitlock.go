package iceberg

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/apache/iceberg-go/table"
)

// tableLocks are the commit locks of the sink's tables, one per Iceberg
// table (a changelog and its mirror are two): ingest commits and maintenance
// commits of one table take turns, so that they never conflict inside one
// process, while different tables commit at the same time (a commit's
// tables run in parallel, see commitparallel.go, and maintenance of one
// table does not hold back another's ingest commit).
type tableLocks struct {
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
