package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// Multi-instance mode (docs/scale-out.md): a source is served under a lease
// whose epoch fences every commit of its batches. A batch carries the epoch
// it was accepted under; a commit claims those epochs, and the catalog's
// transaction refuses it if another instance took the source since. This
// file holds the server's side: acquiring on connect (and learning the
// committed state of a source that was elsewhere), renewing, releasing,
// reclaiming after a restart, recording committed marks, and dropping the
// batches of a source that moved.

// Coordinator is the lease store (internal/coord.Store).
type Coordinator interface {
	Owner() string
	TTL() time.Duration
	Acquire(ctx context.Context, source string, r coord.Resume) (coord.Lease, error)
	Reclaim(ctx context.Context, source string, epoch uint64) (bool, error)
	Renew(ctx context.Context, held map[string]uint64) (lost []string, err error)
	Release(ctx context.Context, source string, epoch uint64) error
	MarkCommitted(ctx context.Context, marks []coord.Mark, keep coord.Window) (map[string]bool, error)
}

// acquireLease takes the source's lease for a connect. A lease another live
// instance holds refuses the connect with Unavailable naming its address;
// when that instance advertises one, the error is a *redirectError and the
// stream answers Redirect before it ends. A dead owner's lease that still
// covers batches the client was acked and cannot resend refuses it with
// Unavailable too, until the owner returns (coord.OrphanError).
func (s *Server) acquireLease(ctx context.Context, id string, r coord.Resume) (coord.Lease, error) {
	l, err := s.coord.Acquire(ctx, id, r)
	var (
		held   *coord.HeldError
		orphan *coord.OrphanError
	)
	if errors.As(err, &orphan) {
		s.log.Warn("source waits for its previous instance: it acked batches the client cannot resend", "source", id,
			"owner", orphan.Owner, "committed", orphan.Committed, "last_acked", orphan.LastAcked,
			"committed_entry", orphan.CommittedEntry, "last_acked_entry", orphan.LastAckedEntry, "until", orphan.Until)
		return l, status.Error(codes.Unavailable, orphan.Error())
	}
	if errors.As(err, &held) {
		st := status.Newf(codes.Unavailable,
			"source %q is served by another instance (%s at %q): connect there, or retry once its lease expires", id, held.Owner, held.Addr)
		if held.Addr == "" {
			return l, st.Err()
		}
		return l, &redirectError{st: st, redirect: &lakehousev1.Redirect{Addr: held.Addr, SourceId: id, Owner: held.Owner}}
	}
	if err != nil {
		return l, status.Errorf(codes.Unavailable, "lease store: %v", err)
	}
	return l, nil
}

// redirectError refuses a connect because another live instance with an
// advertised address owns the source. Stream sends the Redirect, then ends
// with the Unavailable status (clients that do not know Redirect retry as
// they did before it existed).
type redirectError struct {
	st       *status.Status
	redirect *lakehousev1.Redirect
}

func (e *redirectError) Error() string { return e.st.Message() }

// GRPCStatus makes the error its Unavailable status (status.FromError).
func (e *redirectError) GRPCStatus() *status.Status { return e.st }

// adoptLease makes l the source's lease; src.mu is held, and the previous
// stream's appends have settled. If another instance held the source since
// this one last did (or this one never did), the state here is stale: the
// committed state is read from the lease row (so it is after a restart whose
// log held none of the source's batches: recordMarks brought the row up to
// what this instance committed before it stopped; everything up to its mark is
// in every table; for an entry-mode source, numbered here, the tables'
// watermarks count too); for a source never marked, it is 0 if another instance
// held it (batch mode) and the tables' watermarks otherwise. Batches held here under an older epoch are dropped by the
// flusher (dropStale) and fenced if already staged. An entry-mode source's
// dedup window starts from the entry ranges the row says were committed
// (entryranges.go), so that resent entries another instance committed are
// duplicates here too.
func (s *Server) adoptLease(ctx context.Context, src *source, l coord.Lease, mode lakehousev1.SequenceMode) error {
	if src.epoch.Load() == l.Epoch {
		src.leaseHeld = true
		return nil
	}
	seq, entry := l.CommittedSeq, l.CommittedEntry
	switch {
	case l.HasCommitted && mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY:
		// The server numbers an entry-mode source's batches, and a mark
		// can lag its commit (an instance that died in between): numbering
		// from the mark would reuse batch numbers the tables hold, and
		// they would skip the new entries as committed. Number on from
		// the higher of the two. (The read starts after the lease was
		// taken: the previous owner cannot commit any more.)
		wms, err := s.sink.Watermarks(ctx)
		if err != nil {
			return status.Errorf(codes.Unavailable, "read the committed watermarks: %v", err)
		}
		w := wms[src.id]
		seq, entry = max(seq, w.BatchSeq), max(entry, w.EntrySeq)
	case l.HasCommitted:
	case l.Epoch > 1 && mode != lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY:
		// Another instance held the source and never recorded a mark: it
		// may have died between two tables of a flush, so the tables'
		// highest watermark may be above what every table holds. Nothing
		// was persisted (persisted waits for the mark): the client holds
		// every batch and resends them all; the tables skip what they
		// have. (Entry-mode sources are numbered by the server, whose
		// numbering must not go back: they keep the watermarks below.)
		seq, entry = 0, 0
	default:
		// Never held by another instance: data of this source in the
		// tables predates coordination, written by an instance that
		// replays its own log.
		wms, err := s.sink.Watermarks(ctx)
		if err != nil {
			return status.Errorf(codes.Unavailable, "read the committed watermarks: %v", err)
		}
		w := wms[src.id]
		seq, entry = w.BatchSeq, w.EntrySeq
	}
	seeded := 0
	if src.dedup != nil || mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
		src.dedup = newDedupWindow(s.cfg.DedupEntries, s.cfg.DedupWindow)
		if mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
			seeded = s.seedDedup(src.dedup, l, time.Now().UnixMilli())
		}
	}
	s.log.Info("source lease acquired; committed state read from the catalog", "source", src.id, "epoch", l.Epoch,
		"previous_epoch", src.epoch.Load(), "last_sequence", seq, "local_last_sequence", src.lastSeq, "from_mark", l.HasCommitted,
		"dedup_seeded", seeded)
	src.lastSeq, src.lastEntry = seq, entry
	s.mu.Lock()
	src.persistedSeq, src.persistedEntry, src.markedSeq = seq, entry, seq
	src.persistedEpoch = 0
	s.mu.Unlock()
	src.epoch.Store(l.Epoch)
	src.leaseHeld = true
	return nil
}

// recordMarks runs at start: it records the committed marks the saved state
// says may be missing from the lease rows, those of a commit this instance
// made just before it died (the state is saved, and the log released,
// before the mark is recorded). Without them the lease rows understate what
// the tables hold: this instance, or the one the source moves to, would
// tell the client it lacks batches it acked and committed, and a client
// that keeps batches only until ok cannot send them again. It fails the
// start, as reclaimLeases does, when the lease store cannot be reached.
func (s *Server) recordMarks(ctx context.Context, marks []coord.Mark) error {
	if len(marks) == 0 {
		return nil
	}
	ok, err := s.coord.MarkCommitted(ctx, marks, s.keepWindow())
	if err != nil {
		return fmt.Errorf("server: record the committed marks saved before the last stop: %w", err)
	}
	s.mu.Lock()
	for _, m := range marks {
		if src := s.sources[m.Source]; src != nil && ok[m.Source] {
			src.markedSeq = max(src.markedSeq, m.Seq)
		}
	}
	s.mu.Unlock()
	s.log.Info("recorded the committed marks saved before the last stop", "sources", len(marks), "recorded", len(ok))
	return nil
}

// reclaimLeases runs at start: each source with batches in the log resumes
// the lease they were accepted under, unless the source moved meanwhile
// (then they are dropped at the first flush: the new owner is
// authoritative).
func (s *Server) reclaimLeases(ctx context.Context) error {
	epochs := make(map[*source]uint64)
	unfenced := 0
	s.buf.eachQueued(func(bb *bufBatch) {
		if bb.epoch == 0 {
			unfenced++
		}
		epochs[bb.src] = max(epochs[bb.src], bb.epoch)
	})
	if unfenced > 0 {
		return fmt.Errorf("server: the write-ahead log holds %d batches accepted without coordination: start once without it so that they are committed, then turn it on", unfenced)
	}
	for src, e := range epochs {
		asked := time.Now()
		ok, err := s.coord.Reclaim(ctx, src.id, e)
		if err != nil {
			return fmt.Errorf("server: reclaim lease: %w", err)
		}
		if ok {
			src.epoch.Store(e)
			src.leaseHeld = true
			src.leaseExpiry = asked.Add(s.coord.TTL())
			continue
		}
		s.log.Warn("source moved to another instance while this one was down; its batches in the log will not be committed here",
			"source", src.id, "epoch", e)
	}
	return nil
}

// withClaims adds to ctx the fencing claims of a commit of batches.
func (s *Server) withClaims(ctx context.Context, batches []*bufBatch) context.Context {
	if s.coord == nil {
		return ctx
	}
	seen := make(map[fence.Claim]struct{})
	c := fence.Claims{Owner: s.coord.Owner()}
	for _, b := range batches {
		cl := fence.Claim{Source: b.src.id, Epoch: b.epoch}
		if _, ok := seen[cl]; !ok {
			seen[cl] = struct{}{}
			c.Claims = append(c.Claims, cl)
		}
	}
	return fence.With(ctx, c)
}

// dropStale removes from the batches just taken those accepted under an
// epoch this instance no longer holds: the source moved, and its new owner
// is authoritative (the client resends from the committed mark).
func (s *Server) dropStale(batches []*bufBatch, entries int) ([]*bufBatch, int) {
	if s.coord == nil {
		return batches, entries
	}
	kept, dropped := s.buf.dropInflight(func(b *bufBatch) bool { return b.epoch != 0 && b.epoch == b.src.epoch.Load() })
	if dropped > 0 {
		s.m.fencedBatches.Add(float64(dropped))
		s.droppedBatches.Add(uint64(dropped))
		s.log.Warn("dropped batches of sources that moved to another instance", "batches", dropped)
		entries = 0
		for _, b := range kept {
			entries += b.entries
		}
	}
	return kept, entries
}

// fenced handles a commit refused by the fence: the sources whose claims
// failed at their current epoch are lost to another instance (their streams
// end); every staged batch is queued again so that the next flush stages
// what is still this instance's.
func (s *Server) fenced(err error) {
	var fe *fence.Error
	if !errors.As(err, &fe) {
		return
	}
	for _, cl := range fe.Failed {
		s.mu.Lock()
		src := s.sources[cl.Source]
		s.mu.Unlock()
		if src == nil {
			continue
		}
		src.mu.Lock()
		if src.epoch.Load() == cl.Epoch {
			s.loseLeaseLocked(src)
		}
		src.mu.Unlock()
	}
	s.buf.unstage()
}

// loseLeaseLocked records that another instance took src (src.mu held).
func (s *Server) loseLeaseLocked(src *source) {
	s.log.Warn("source lease lost to another instance", "source", src.id, "epoch", src.epoch.Load())
	src.epoch.Store(0)
	src.leaseHeld = false
	if src.owner != nil {
		src.owner.close(errLeaseLost)
	}
}

// markCommitted records the committed marks of a finished commit in the
// lease rows, with their entry ranges (gens: the sources' rangesGen when the
// ranges were read), and returns the sources whose marks were recorded: only
// they are told persisted now (a client that drops a batch once persisted
// must find it under the mark wherever it reconnects). The lease loop
// retries the others.
func (s *Server) markCommitted(ctx context.Context, marks []coord.Mark, gens map[string]uint64) map[string]bool {
	ok, err := s.coord.MarkCommitted(ctx, marks, s.keepWindow())
	if err != nil {
		s.log.Warn("recording committed marks failed; persisted messages wait for the next renewal", "error", err)
		return nil
	}
	s.mu.Lock()
	for _, m := range marks {
		if ok[m.Source] {
			if src := s.sources[m.Source]; src != nil {
				src.markedSeq = max(src.markedSeq, m.Seq)
				if len(m.Ranges) > 0 && src.rangesGen == gens[m.Source] {
					src.unmarked = nil
				}
			}
		}
	}
	s.mu.Unlock()
	return ok
}

// runLeases renews the held leases every third of the TTL, releases those
// of idle sources, and on stop (after the final flush) releases the idle
// ones so that their sources can move at once.
func (s *Server) runLeases() {
	defer s.bg.Done()
	t := time.NewTicker(s.coord.TTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			s.leaseRound(true)
			return
		case <-t.C:
			s.leaseRound(false)
		}
	}
}

type heldLease struct {
	src                    *source
	epoch                  uint64
	idle                   bool
	persisted, entry, mark uint64
	ranges                 []coord.EntryRange
	rangesGen              uint64
	owner                  *session
}

// leaseRound renews, releases and re-marks the held leases once.
func (s *Server) leaseRound(stopping bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.coord.TTL()/3)
	defer cancel()
	idleFor := (s.coord.TTL() / 3).Milliseconds()
	now := time.Now().UnixMilli()
	s.mu.Lock()
	srcs := make([]*source, 0, len(s.sources))
	for _, src := range s.sources {
		srcs = append(srcs, src)
	}
	s.mu.Unlock()
	var leases []heldLease
	for _, src := range srcs {
		src.mu.Lock()
		h := heldLease{src: src, epoch: src.epoch.Load(), owner: src.owner}
		held, last := src.leaseHeld, src.lastSeq
		src.mu.Unlock()
		if !held {
			continue
		}
		s.mu.Lock()
		h.persisted, h.entry, h.mark = src.persistedSeq, src.persistedEntry, src.markedSeq
		h.ranges, h.rangesGen = unmarkedLocked(src)
		h.idle = h.owner == nil && h.persisted >= last && (stopping || now-src.lastSeenMs > idleFor)
		s.mu.Unlock()
		leases = append(leases, h)
	}
	var marks []coord.Mark
	gens := make(map[string]uint64)
	renew := make(map[string]uint64)
	for _, h := range leases {
		if h.persisted > h.mark {
			marks = append(marks, coord.Mark{Source: h.src.id, Epoch: h.epoch, Seq: h.persisted, Entry: h.entry, Ranges: h.ranges})
			gens[h.src.id] = h.rangesGen
		}
		if !h.idle {
			renew[h.src.id] = h.epoch
		}
	}
	if len(marks) > 0 {
		ok := s.markCommitted(ctx, marks, gens)
		for _, h := range leases {
			if ok[h.src.id] && h.owner != nil {
				h.owner.notifyPersisted(h.persisted, h.entry)
			}
		}
	}
	asked := time.Now()
	lost, err := s.coord.Renew(ctx, renew)
	renewed := err == nil
	if err != nil {
		s.log.Warn("renewing source leases failed", "sources", len(renew), "error", err)
	}
	lostSet := make(map[string]bool, len(lost))
	for _, id := range lost {
		lostSet[id] = true
	}
	for _, h := range leases {
		h.src.mu.Lock()
		switch {
		case h.src.epoch.Load() != h.epoch:
			// Changed meanwhile (a new connect adopted another epoch).
		case lostSet[h.src.id]:
			s.loseLeaseLocked(h.src)
		case renewed && !h.idle:
			h.src.leaseExpiry = asked.Add(s.coord.TTL())
		case h.idle && h.src.owner == nil:
			if err := s.coord.Release(ctx, h.src.id, h.epoch); err != nil {
				s.log.Warn("releasing a source lease failed", "source", h.src.id, "error", err)
			} else {
				h.src.leaseHeld = false
			}
		}
		h.src.mu.Unlock()
	}
}
