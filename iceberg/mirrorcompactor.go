package iceberg

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/proflabel"
)

// mirrorCompactor is the queue of the background mirror compaction: each
// mirror commit that added delete files names its table here and wakes
// RunMirrorCompaction, which checks those tables' partitions.
type mirrorCompactor struct {
	mu      sync.Mutex
	pending map[string]struct{} // CDC table names (original)
	wake    chan struct{}       // one slot: a wake-up is pending
}

func (c *mirrorCompactor) init() {
	c.pending = make(map[string]struct{})
	c.wake = make(chan struct{}, 1)
}

// note queues a table and wakes the compactor, without blocking.
func (c *mirrorCompactor) note(name string) {
	c.mu.Lock()
	c.pending[name] = struct{}{}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take empties the queue.
func (c *mirrorCompactor) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := slices.Sorted(maps.Keys(c.pending))
	clear(c.pending)
	return names
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
	for _, name := range s.mirrorCompact.take() {
		jctx, cancel := context.WithTimeout(ctx, s.cfg.Maintenance.Timeout)
		_, err := s.compactMirror(jctx, name, s.cfg.MirrorCompactDeleteFiles)
		cancel()
		if err != nil {
			s.mirrorCompact.mu.Lock()
			s.mirrorCompact.pending[name] = struct{}{}
			s.mirrorCompact.mu.Unlock()
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}
