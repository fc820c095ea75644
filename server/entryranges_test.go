package server

import (
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// TestSeedDedupBounds: an adopted source's window is seeded with the newest
// DedupEntries sequences of the lease row's ranges, skipping ranges older
// than DedupWindow by the database's clock; the seeded entries expire a
// window after the adoption.
func TestSeedDedupBounds(t *testing.T) {
	s := &Server{cfg: Config{DedupEntries: 60, DedupWindow: time.Minute}}
	const dbNow = 1_000_000_000
	l := coord.Lease{NowMs: dbNow, Ranges: []coord.EntryRange{
		{Lo: 1, Hi: 100, AtMs: dbNow - 2*time.Minute.Milliseconds()}, // too old
		{Lo: 400, Hi: 450, AtMs: dbNow - 1000},
		{Lo: 200, Hi: 300, AtMs: dbNow - 2000},
	}}
	w := newDedupWindow(s.cfg.DedupEntries, s.cfg.DedupWindow)
	now := time.Now().UnixMilli()
	if n := s.seedDedup(w, l, now); n != 60 {
		t.Fatalf("seeded %d entries, want 60", n)
	}
	for q, want := range map[uint64]bool{1: false, 100: false, 291: false, 292: true, 300: true, 301: false, 400: true, 450: true, 451: false} {
		if w.has(q) != want {
			t.Errorf("entry %d in the window: %v, want %v", q, w.has(q), want)
		}
	}
	w.expire(now + time.Minute.Milliseconds() - 1)
	if !w.has(292) {
		t.Error("a seeded entry expired before a window passed")
	}
	w.expire(now + time.Minute.Milliseconds() + 1)
	if w.has(450) {
		t.Error("a seeded entry outlived the window")
	}
}
