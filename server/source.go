package server

import (
	"sync"
	"sync/atomic"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// source is the server's state for one source id.
//
// mu serialises everything that changes the source's sequencing: accepting a
// batch holds it from the sequence check until its write-ahead log append is
// queued, and a takeover holds it while fencing the old stream and waits
// (on settled) for the old stream's queued appends, so a zombie stream can
// never write after its successor connected and the successor learns a
// durable last sequence.
type source struct {
	id string

	mu        sync.Mutex
	shard     string
	mode      lakehousev1.SequenceMode
	owner     *session // the live stream, nil when none
	lastSeq   uint64   // highest accepted (durable) batch sequence
	lastEntry uint64   // highest accepted entry sequence
	dedup     *dedupWindow
	appending int       // appends queued in the write-ahead log, not yet durable
	settled   sync.Cond // signalled (L = &mu) when appending decreases
	// appendGen is the server's write-ahead log failure count (walFault.gen)
	// when appending last rose from 0. While appends queued before a failure
	// are pending, the source's sequencing may still be rolled back, so it
	// accepts nothing until they settle.
	appendGen uint64
	// epoch is the lease epoch this instance holds for the source
	// (lease.go): 0 when it holds none. Written under mu; read by the
	// flusher without it.
	epoch     atomic.Uint64
	leaseHeld bool // the lease is held (not released, not lost); under mu
	// leaseExpiry is when the lease ends unless renewed, by this
	// instance's clock: the TTL from the moment it sent the last acquire,
	// reclaim or renewal that succeeded (the database counts its TTL from
	// a later moment, so this never runs past the database's expiry).
	// Under mu.
	leaseExpiry time.Time

	// Guarded by Server.mu (updated by the flusher).
	persistedSeq   uint64
	persistedEntry uint64
	// persistedEpoch is the lease epoch this instance committed the
	// batches up to persistedSeq under: 0 without coordination, or when
	// they are known from the lease row (adoptLease). It is saved with the
	// state, so that a restart records a mark a crash left unrecorded.
	persistedEpoch uint64
	markedSeq      uint64 // the committed mark recorded in the lease row (lease.go)
	// unmarked are entry ranges committed here and not yet recorded in the
	// lease row; rangesGen counts additions to them (entryranges.go).
	unmarked   []coord.EntryRange
	rangesGen  uint64
	batches    uint64
	entries    uint64
	lastSeenMs int64
}

// dedupWindow remembers the entry sequences a legacy source sent recently.
// Legacy children resend timed-out batches under new batch numbers, so an
// entry seen inside the window is a duplicate. An entry older than the window
// (by count or age) is forgotten: if it is resent after that, it is stored
// again. The window is saved with the sequencing state and rebuilt from the
// write-ahead log, so it survives restarts.
type dedupWindow struct {
	max    int
	maxAge time.Duration
	seen   map[uint64]struct{}
	order  []dedupItem // FIFO, oldest first; head index avoids shifting
	head   int
}

type dedupItem struct {
	Seq  uint64 `json:"s"`
	AtMs int64  `json:"t"`
}

func newDedupWindow(max int, maxAge time.Duration) *dedupWindow {
	return &dedupWindow{max: max, maxAge: maxAge, seen: make(map[uint64]struct{})}
}

func (w *dedupWindow) has(seq uint64) bool {
	_, ok := w.seen[seq]
	return ok
}

func (w *dedupWindow) add(seq uint64, atMs int64) {
	if _, ok := w.seen[seq]; ok {
		return
	}
	w.seen[seq] = struct{}{}
	w.order = append(w.order, dedupItem{Seq: seq, AtMs: atMs})
	for len(w.order)-w.head > w.max {
		w.evictOne()
	}
}

// expire forgets entries older than the window's age.
func (w *dedupWindow) expire(nowMs int64) {
	limit := nowMs - w.maxAge.Milliseconds()
	for w.head < len(w.order) && w.order[w.head].AtMs < limit {
		w.evictOne()
	}
}

func (w *dedupWindow) evictOne() {
	delete(w.seen, w.order[w.head].Seq)
	w.head++
	if w.head > 1024 && w.head*2 > len(w.order) {
		w.order = append([]dedupItem(nil), w.order[w.head:]...)
		w.head = 0
	}
}

// remove forgets seqs, entries of a batch whose append failed, so that the
// batch is accepted again when it is resent. Failures are rare; this is
// linear in the window.
func (w *dedupWindow) remove(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	drop := make(map[uint64]struct{}, len(seqs))
	for _, q := range seqs {
		if _, ok := w.seen[q]; ok {
			drop[q] = struct{}{}
			delete(w.seen, q)
		}
	}
	kept := w.order[:w.head]
	for _, it := range w.order[w.head:] {
		if _, ok := drop[it.Seq]; !ok {
			kept = append(kept, it)
		}
	}
	w.order = kept
}

func (w *dedupWindow) items() []dedupItem {
	return append([]dedupItem(nil), w.order[w.head:]...)
}
