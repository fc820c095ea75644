package server

import (
	"context"
	"fmt"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// DrainResult is what Drain did since the server started.
type DrainResult struct {
	// Batches and Entries were committed (including by flushes the
	// server ran on its own since it started).
	Batches, Entries uint64
	// Dropped counts batches not committed here because their sources
	// moved to another instance (multi-instance mode): the new owner is
	// authoritative.
	Dropped uint64
}

// Drain commits everything the server holds, retrying failed flushes every
// Config.RetryDelay, and returns once nothing is left (the write-ahead log is
// released) or ctx ends. It is `lakehouse replay`: a server opened on a dead
// instance's data directory, with no listeners, so nothing new arrives.
// Call Shutdown afterwards.
func (s *Server) Drain(ctx context.Context) (DrainResult, error) {
	result := func() DrainResult {
		return DrainResult{Batches: s.committedBatches.Load(), Entries: s.committedEntries.Load(), Dropped: s.droppedBatches.Load()}
	}
	for {
		bs := s.buf.stats(false)
		left := bs.queuedBatches + bs.inflBatches + bs.stagedBatches
		if left == 0 {
			return result(), nil
		}
		res, err := s.flushDirect(ctx, lakehousev1.FlushReason_FLUSH_REASON_MANUAL)
		if err != nil {
			return result(), fmt.Errorf("server: drain: %d batches left: %w", left, err)
		}
		if res.GetSuccess() {
			continue
		}
		s.log.Warn("drain: flush failed; retrying", "batches_left", left, "error", res.GetError(), "retry_in", s.cfg.RetryDelay)
		select {
		case <-ctx.Done():
			return result(), fmt.Errorf("server: drain: %d batches left, last error %s: %w", left, res.GetError(), ctx.Err())
		case <-time.After(s.cfg.RetryDelay):
		}
	}
}
