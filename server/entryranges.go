package server

import (
	"cmp"
	"slices"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// Entry-mode sources (legacy children) moving between instances. Their
// resent batches are new batches (new numbers, IS_RETRY), found to be
// duplicates only by entry sequence in the source's dedup window, which is
// this instance's memory. So that the window survives a move, each commit
// records the entry spans it committed in the lease row, with the committed
// mark (coord.Store.MarkCommitted, one statement), and an instance adopting
// a source that was elsewhere seeds its fresh window from them (adoptLease).
// Only committed spans are recorded: an entry that a dead instance accepted
// and never committed must stay acceptable at its successor (its copy in
// that instance's log is dropped when it returns, since the source moved).

// keepWindow bounds the ranges a lease row keeps: the dedup window.
func (s *Server) keepWindow() coord.Window {
	return coord.Window{Age: s.cfg.DedupWindow, Entries: s.cfg.DedupEntries}
}

// noteRangesLocked adds the entry spans of committed entry-mode batches to
// their sources' unrecorded ranges (s.mu held). A batch covers the span of
// its entries: a legacy child's batches are slices of its increasing entry
// sequences, and a source's batches commit here in the order accepted.
func (s *Server) noteRangesLocked(batches []*bufBatch) {
	if s.coord == nil {
		return
	}
	var added map[*source][]coord.EntryRange
	for _, b := range batches {
		if !b.entryMode || b.entries == 0 {
			continue
		}
		if added == nil {
			added = make(map[*source][]coord.EntryRange)
		}
		added[b.src] = append(added[b.src], coord.EntryRange{Lo: b.firstEntry, Hi: b.lastEntry})
	}
	for src, rs := range added {
		src.unmarked = coord.MergeRanges(append(src.unmarked, rs...), s.cfg.DedupEntries)
		src.rangesGen++
	}
}

// unmarkedLocked returns a copy of src's unrecorded ranges and their
// generation (s.mu held).
func unmarkedLocked(src *source) ([]coord.EntryRange, uint64) {
	return slices.Clone(src.unmarked), src.rangesGen
}

// seedDedup fills w, a fresh window of a source adopted from another
// instance, with the lease row's committed ranges: the newest sequences
// first, at most DedupEntries, skipping ranges older than DedupWindow by the
// database's clock. They expire a window from now. It returns how many were
// added.
func (s *Server) seedDedup(w *dedupWindow, l coord.Lease, nowMs int64) int {
	var seqs []uint64
	rs := slices.Clone(l.Ranges)
	slices.SortFunc(rs, func(a, b coord.EntryRange) int { return cmp.Compare(b.Hi, a.Hi) })
	budget := s.cfg.DedupEntries
	for _, r := range rs {
		if l.NowMs-r.AtMs > s.cfg.DedupWindow.Milliseconds() {
			continue
		}
		for q := r.Hi; q >= r.Lo && budget > 0; q-- {
			seqs = append(seqs, q)
			budget--
			if q == 0 {
				break
			}
		}
		if budget == 0 {
			break
		}
	}
	for i := len(seqs) - 1; i >= 0; i-- {
		w.add(seqs[i], nowMs)
	}
	return len(seqs)
}
