package iceberg

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestCommitPassesWaitIdle: waitIdle returns at once without a pass, when
// the last running pass ends, at its limit, or when its context ends; the
// end of the last pass calls onIdle once.
func TestCommitPassesWaitIdle(t *testing.T) {
	var (
		p     commitPasses
		idles atomic.Int32
	)
	p.init(func() { idles.Add(1) })
	ctx := context.Background()
	if d := p.waitIdle(ctx, time.Hour); d != 0 {
		t.Errorf("waited %v with no pass running", d)
	}
	p.start()
	p.start()
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.end()
		time.Sleep(20 * time.Millisecond)
		p.end()
	}()
	if d := p.waitIdle(ctx, time.Hour); d < 40*time.Millisecond {
		t.Errorf("waited %v: returned before the second pass ended", d)
	}
	if p.active() || idles.Load() != 1 {
		t.Errorf("after both passes: active %v, onIdle called %d times, want false, 1", p.active(), idles.Load())
	}
	p.start()
	if d := p.waitIdle(ctx, 30*time.Millisecond); d < 30*time.Millisecond {
		t.Errorf("waited %v for a pass that does not end, want the 30ms limit", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if d := p.waitIdle(cctx, time.Hour); d > time.Minute {
		t.Errorf("waited %v with the context done", d)
	}
	p.end()
	if p.startedCount() != 3 || idles.Load() != 2 {
		t.Errorf("%d passes started, onIdle called %d times; want 3, 2", p.startedCount(), idles.Load())
	}
}

// TestMergePauseBounded: with a commit pass that never ends, a merge waits
// at most as long as it has run, plus its slack.
func TestMergePauseBounded(t *testing.T) {
	var p commitPasses
	p.init(nil)
	p.mergeSlack = time.Second
	p.start()
	defer p.end()
	m := newMergePause(context.Background(), &p)
	start := time.Now()
	m.wait()
	if d := time.Since(start); d < p.mergeSlack {
		t.Fatalf("the first wait took %v, want the slack, %v", d, p.mergeSlack)
	}
	before := m.waited
	m.wait()
	if m.waited-before > 50*time.Millisecond {
		t.Errorf("waited %v more without having run", m.waited-before)
	}
	time.Sleep(100 * time.Millisecond) // the merge runs
	before = m.waited
	m.wait()
	if w := m.waited - before; w > 300*time.Millisecond {
		t.Errorf("after running 100ms, waited %v", w)
	}
	// Each wait ends at its timer: a few milliseconds late at most.
	if ran := time.Since(m.begun) - m.waited; m.waited > ran+p.mergeSlack+50*time.Millisecond {
		t.Errorf("waited %v in all for %v run: over the budget", m.waited, ran)
	}
}

// TestCompactionPausesForCommitPasses: a compaction merge started while a
// commit pass runs (here a server's commit, BeginCommit) waits for its end
// before it merges anything (within its budget), and then compacts the
// table as usual.
func TestCompactionPausesForCommitPasses(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	fs := commitN(t, s, 6)
	s.passes.mergeSlack = 5 * time.Second
	end := s.BeginCommit() // a server's commit, its stage included
	type result struct {
		res compactResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.compactTable(ctx, "users")
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the compaction ran to its end during the commit pass: %+v, %v", r.res, r.err)
	case <-time.After(time.Second):
	}
	end()
	end() // ends the commit once
	if s.passes.start(); !s.passes.active() {
		t.Error("a pass started after the commit's end is not active: the end was counted twice")
	}
	s.passes.end()
	r := <-done
	if r.err != nil || r.res.filesRemoved == 0 {
		t.Fatalf("the compaction after the pass: %+v, %v", r.res, r.err)
	}
	if n := len(liveFiles(t, s, "users")); n != 1 {
		t.Errorf("users has %d files after the compaction, want 1", n)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
}
