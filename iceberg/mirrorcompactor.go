package iceberg

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/proflabel"
)

// mirrorCompactor is the queue of the background mirror compaction: each
// mirror commit that added delete files names its table here, and
// RunMirrorCompaction checks those tables' partitions between commit
// passes. A compaction step holds the mirror's commit lock from plan to
// commit, and a pass commits every table's mirror: woken by each mirror
// commit, the compactor ran one table behind the pass, so each mirror
// commit of a pass waited for a rewrite of its table (0.4-2 s each at
// saturation with W1, passes of up to 5 s, and a 10-s window in which ingest
// acked nothing). So a note made during a pass wakes the compactor when
// the pass ends, and the compactor starts no step while a pass runs,
// unless it has been put off for maxPutOff: passes back to back (a commit
// interval shorter than a pass) would otherwise starve it, and a mirror's
// delete files, with its scan cost, would grow without bound. A step
// then runs during the pass, whose mirror commit of that table waits for
// it (one step: at most about the table's target file size rewritten).
type mirrorCompactor struct {
	passes    *commitPasses // the sink's
	mu        sync.Mutex
	pending   map[string]struct{}        // CDC table names (original)
	resume    string                     // where the last round stopped for a pass
	headroom  map[string]*mirrorHeadroom // tables a check found nothing due in (mirrorheadroom.go)
	putOffAt  time.Time                  // first yield to a pass since the last full round (zero: none)
	maxPutOff time.Duration              // how long rounds yield to passes (mirrorCompactMaxPutOff; shorter in tests)
	wake      chan struct{}              // one slot: a wake-up is pending

	// The background compaction's thresholds (Config), for headroom.
	minDeletes int
	scanBudget int64
}

// mirrorCompactMaxPutOff is how long the background mirror compaction
// yields to commit passes before it runs a step during one: the
// maintenance interval's default, so that a starved table is compacted at
// most about as late as by the maintenance loop.
const mirrorCompactMaxPutOff = DefaultMaintenanceInterval

func (c *mirrorCompactor) init(passes *commitPasses, minDeletes int, scanBudget int64) {
	c.passes = passes
	c.minDeletes, c.scanBudget = minDeletes, scanBudget
	c.pending = make(map[string]struct{})
	c.headroom = make(map[string]*mirrorHeadroom)
	c.wake = make(chan struct{}, 1)
	c.maxPutOff = mirrorCompactMaxPutOff
}

// note queues a table after a mirror commit that grew it by g and, unless
// a commit pass runs, wakes the compactor, without blocking. A table whose
// headroom the commit cannot have used up is not queued (a zero g always
// queues).
func (c *mirrorCompactor) note(name string, g mirrorGrowth) {
	c.mu.Lock()
	if h := c.headroom[name]; h.add(g) && !h.mayBeDue(c.minDeletes, c.scanBudget) {
		c.mu.Unlock()
		return
	}
	delete(c.headroom, name)
	c.pending[name] = struct{}{}
	c.mu.Unlock()
	if !c.passes.active() {
		c.signal()
	}
}

func (c *mirrorCompactor) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// passesEnded wakes the compactor, when tables wait, at the end of the
// last commit pass running (commitPasses calls it).
func (c *mirrorCompactor) passesEnded() {
	c.mu.Lock()
	wake := len(c.pending) > 0
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// yieldToPass reports whether a compaction step should wait for a commit
// pass: one runs, and compaction has not yielded for maxPutOff since its
// last full round. The first yield starts that clock.
func (c *mirrorCompactor) yieldToPass() bool {
	if !c.passes.active() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.putOffAt.IsZero() {
		c.putOffAt = time.Now()
	}
	return time.Since(c.putOffAt) < c.maxPutOff
}

// roundDone records a round that reached every table it took: the
// compactor is no longer behind.
func (c *mirrorCompactor) roundDone() {
	c.mu.Lock()
	c.putOffAt = time.Time{}
	c.mu.Unlock()
}

// measured records the headroom of a table a check found nothing due in;
// ok false forgets it. Called under the table's commit lock.
func (c *mirrorCompactor) measured(name string, h mirrorHeadroom, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.headroom[name] = &h
	} else {
		delete(c.headroom, name)
	}
}

// requeue puts names back in the queue, without waking the compactor.
func (c *mirrorCompactor) requeue(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueLocked(names)
}

func (c *mirrorCompactor) queueLocked(names []string) {
	for _, n := range names {
		c.pending[n] = struct{}{}
	}
}

// putOff puts back the tables a round did not reach because a commit
// pass started, without waking the compactor; the next round starts with
// the first of them. Otherwise, with passes close together, each round
// would reach the same first tables in name order and never the last.
func (c *mirrorCompactor) putOff(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueLocked(names)
	if len(names) > 0 {
		c.resume = names[0]
	}
}

// take empties the queue: the tables in name order, from where the last
// round stopped for a pass, round the end.
func (c *mirrorCompactor) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := slices.Sorted(maps.Keys(c.pending))
	clear(c.pending)
	i, _ := slices.BinarySearch(names, c.resume)
	c.resume = ""
	return slices.Concat(names[i:], names[:i])
}

// RunMirrorCompaction compacts mirror partitions in the background until
// ctx ends: after each mirror commit that added delete files, the
// partitions of that table over their delete-file threshold or scan budget
// (see mirrorcompact.go). `lakehouse serve` runs it beside the server when
// mirrors are on; a Sink used without it leaves mirror compaction to
// Maintain.
func (s *Sink) RunMirrorCompaction(ctx context.Context) {
	if !s.cfg.Mirror || s.cfg.MirrorCompactDeleteFiles < 0 {
		return
	}
	proflabel.Set(ctx, proflabel.Maintenance)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.mirrorCompact.wake:
		}
		if err := s.CompactMirrors(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("mirror compaction failed; retried after the next commit", "err", err)
			// Do not spin on a failing store: the next commit wakes us.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// CompactMirrors runs one pass of the background mirror compaction over
// the tables mirror commits queued since the last pass. A table that fails
// is queued again.
func (s *Sink) CompactMirrors(ctx context.Context) error {
	var firstErr error
	names := s.mirrorCompact.take()
	s.countMirror(func(t *MirrorTotals) { t.CompactionChecks += int64(len(names)) })
	for i, name := range names {
		jctx, cancel := context.WithTimeout(ctx, s.cfg.Maintenance.Timeout)
		_, err := s.compactMirror(jctx, name, s.cfg.MirrorCompactDeleteFiles)
		cancel()
		if errors.Is(err, errCommitPassRunning) {
			// The rest waits for the pass's end, which wakes us.
			s.mirrorCompact.putOff(names[i:])
			return firstErr
		}
		if err != nil {
			s.mirrorCompact.requeue(name)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	s.mirrorCompact.roundDone()
	return firstErr
}
