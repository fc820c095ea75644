package iceberg

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// A commit's tables are independent: each has its own snapshot, watermarks
// and mirror. commitTables therefore commits them in parallel, up to
// Config.CommitParallelism at once, the smallest first; within a table
// the changelog commit comes first and its mirror commit after it (the
// mirror's watermarks must never pass the changelog's). A commit then
// takes about as long as its slowest table, not the sum of all, and a
// small table (a freshness marker) no longer waits for the large ones.
//
// Failures: every table is tried whatever the others do, so the outcome
// does not depend on scheduling. A table whose changelog commit fails
// skips its mirror; the tables that committed stay committed and are in
// the Result, and the error names each failing table (errors.Join, in
// name order). A retry of the same staged flushes commits only what is
// missing: the tables' watermarks recognise what is there.
//
// What runs concurrently, and why it is safe: the catalog (database/sql
// pools for the SQL catalog, with SQLite writes serialised inside the
// process by ownedDBCatalog; an HTTP client for REST and Glue); each
// table's commit lock (commitlock.go) is per table; the staged-path set
// (stagedMu), the mirror bookkeeping (mirrorState.mu; each table's index
// is used only under its mirror's commit lock), the compaction queue and
// the counters have locks of their own. The stage caches are not touched
// (CommitStaged drops them under Sink.mu before it starts).

// tableOutcome is what committing one table's staged parts did.
type tableOutcome struct {
	changelog tableResult
	// committed: the changelog commit succeeded (or had nothing to do).
	committed bool
	mirror    mirrorResult
	err       error // names the table
}

// commitTables commits each table's parts (commitTableAndMirror), up to
// Config.CommitParallelism tables at once, and returns the outcomes in the
// order of names.
func (s *Sink) commitTables(ctx context.Context, byTable map[string][]*stagedTable, bases stageBases, c sink.CommitInfo) ([]string, []tableOutcome) {
	names := slices.Sorted(maps.Keys(byTable))
	out := make([]tableOutcome, len(names))
	order := smallestFirst(names, byTable)
	inParallel(s.cfg.CommitParallelism, len(order), func(k int) {
		i := order[k]
		out[i] = s.commitTableAndMirror(ctx, names[i], byTable[names[i]], bases, c)
	})
	return names, out
}

// smallestFirst returns the indexes of names in the order their commits
// start: fewest staged rows (changelog and mirror) first, then by name.
// A table's commit costs about its rows, so a small table (a marker, a
// table of settings) is visible soonest and waits for no large one, while
// the commit as a whole takes as long as in any other order; a commit
// whose CPU the tables share (two cores, ingest beside) gains the most.
func smallestFirst(names []string, byTable map[string][]*stagedTable) []int {
	rows := make([]int64, len(names))
	for i, name := range names {
		for _, p := range byTable[name] {
			rows[i] += p.rows
			if p.mirror != nil {
				rows[i] += p.mirror.rows
			}
		}
	}
	return fewestFirst(rows)
}

// fewestFirst returns the indexes of rows in increasing order of their
// values, ties in index order: the order in which a commit's tables start
// (the elected committer's rounds use it too).
func fewestFirst(rows []int64) []int {
	order := make([]int, len(rows))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rows[a], rows[b]) })
	return order
}

// inParallel calls fn(0) ... fn(n-1), at most workers at once, started in
// that order, and returns when all have returned. With one worker the
// calls run one after the other on the caller's goroutine.
func inParallel(workers, n int, fn func(i int)) {
	workers = min(workers, n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var (
		next atomic.Int64 // the next i to start
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

// commitTableAndMirror commits a table's changelog and then its mirror.
func (s *Sink) commitTableAndMirror(ctx context.Context, name string, parts []*stagedTable, bases stageBases, c sink.CommitInfo) tableOutcome {
	var o tableOutcome
	tr, err := s.commitTable(ctx, name, parts, c, bases.changelog(name))
	o.changelog = tr
	if err != nil {
		o.err = fmt.Errorf("iceberg: commit table %q (commit %d): %w", name, c.ID, err)
		return o
	}
	o.committed = true
	for _, p := range parts {
		s.unmarkStaged(p.files)
	}
	if !s.mirrored(name) {
		return o
	}
	var mps []*mirrorPart
	for _, p := range parts {
		if p.mirror != nil {
			mps = append(mps, p.mirror)
		}
	}
	mr, err := s.commitMirror(ctx, name, mps, c, nil, bases.mirror(name))
	if err != nil {
		o.err = fmt.Errorf("iceberg: commit mirror of table %q (commit %d): %w", name, c.ID, err)
		return o
	}
	o.mirror = mr
	if mr.snapshotID != 0 && s.cfg.MirrorCompactDeleteFiles >= 0 && mr.deleteFiles > 0 {
		s.mirrorCompact.note(name, mr.growth) // compacted in the background, never here
	}
	return o
}
