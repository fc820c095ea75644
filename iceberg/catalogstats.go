package iceberg

import (
	"errors"
	"sync/atomic"

	"github.com/apache/iceberg-go/table"
)

// CatalogTotals counts the table commits the sink sent to its SQL catalog.
// Several instances on one catalog (docs/scale-out.md) conflict when two
// commit the same table at once: the loser's attempt fails with
// table.ErrCommitFailed and iceberg-go replays it on the new metadata, so
// Conflicts over Attempts is the catalog's contention. Loads counts the
// sink's own table loads, each a read and a parse of the table's metadata
// file (iceberg-go's SQL catalog loads the table once more inside each
// commit attempt, which is not counted).
type CatalogTotals struct {
	Attempts  int64 // CommitTable calls, each retry included
	Conflicts int64 // attempts refused because the table had moved
	Errors    int64 // attempts that failed otherwise
	Loads     int64 // LoadTable calls
}

// commitCounter is CatalogTotals kept with atomics: commits run on the
// ingest and maintenance goroutines at once.
type commitCounter struct {
	attempts, conflicts, errors, loads atomic.Int64
}

func (c *commitCounter) record(err error) {
	c.attempts.Add(1)
	switch {
	case err == nil:
	case errors.Is(err, table.ErrCommitFailed), errors.Is(err, errMirrorMoved):
		c.conflicts.Add(1)
	default:
		c.errors.Add(1)
	}
}

// CatalogTotals returns the sink's catalog commit counters. They are zero
// for the REST and Glue catalogs, whose commits it does not count.
func (s *Sink) CatalogTotals() CatalogTotals {
	oc, ok := s.cat.(*ownedDBCatalog)
	if !ok {
		return CatalogTotals{}
	}
	return CatalogTotals{
		Attempts:  oc.commits.attempts.Load(),
		Conflicts: oc.commits.conflicts.Load(),
		Errors:    oc.commits.errors.Load(),
		Loads:     oc.commits.loads.Load(),
	}
}
