package iceberg

import (
	"context"
	"sync"
	"time"
)

// commitPasses tracks the commit passes running: a server's commit, from
// the stage of its remainder on (BeginCommit), a flush's commit of its
// tables (commitStagedLocked), an elected committer's round that commits.
// Background work steps aside for them, since a pass is what a child waits
// for (its `persisted` message): the mirror compactor starts no step while
// one runs (mirrorCompactor), and a compaction merge pauses while one runs
// (mergePause).
type commitPasses struct {
	mu      sync.Mutex
	running int
	started int // passes started (tests check that an idle round starts none)
	// idle is closed while no pass runs; a pass that starts from idle
	// replaces it.
	idle chan struct{}
	// onIdle is called, without mu, when the last running pass ends.
	onIdle func()
	// mergeSlack is the merges' mergePauseSlack (longer in tests).
	mergeSlack time.Duration
}

func (p *commitPasses) init(onIdle func()) {
	p.idle = make(chan struct{})
	close(p.idle)
	p.onIdle = onIdle
	p.mergeSlack = mergePauseSlack
}

// BeginCommit implements sink.CommitMarker: the server's whole commit, the
// stage of what was still buffered included, counts as a commit pass, so
// that maintenance steps aside for that stage too. A mirror rewrite running
// beside a flush's stage made it take 500 ms instead of 95 (at a commit a
// second and 240,000 W1 entries/s).
func (s *Sink) BeginCommit() (end func()) {
	s.passes.start()
	var once sync.Once
	return func() { once.Do(s.passes.end) }
}

// start records a pass that begins; end must follow.
func (p *commitPasses) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running == 0 {
		p.idle = make(chan struct{})
	}
	p.running++
	p.started++
}

// end records the end of a pass.
func (p *commitPasses) end() {
	p.mu.Lock()
	p.running--
	last := p.running == 0
	if last {
		close(p.idle)
	}
	p.mu.Unlock()
	if last && p.onIdle != nil {
		p.onIdle()
	}
}

// active reports whether a pass runs.
func (p *commitPasses) active() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running > 0
}

// startedCount returns how many passes started so far.
func (p *commitPasses) startedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// waitIdle waits until no pass runs, for at most limit or until ctx ends,
// and returns how long it waited.
func (p *commitPasses) waitIdle(ctx context.Context, limit time.Duration) time.Duration {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return 0
	default:
	}
	start := time.Now()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Since(start)
}

// mergePause is how a compaction merge steps aside for commit passes. A
// maintenance pass compacts every table one after the other, each merge
// keeping a processor busy for seconds; with a commit a second at 240,000
// W1 entries/s, the commits that ran beside a pass took 1.1-1.8 s instead
// of 0.6, and the entries' `persisted` p99 went from 1.7 s (no
// maintenance) to 2.7-3.5 s. So a merge waits, between two batches of an
// input, while a commit pass runs. It never waits longer in all than it
// has run plus a slack (mergePauseSlack): a merge takes at most about
// twice its time plus that, however close together the passes come, and
// compaction keeps up wherever it did with half the processor time.
type mergePause struct {
	passes *commitPasses
	ctx    context.Context
	begun  time.Time
	slack  time.Duration
	waited time.Duration
}

// mergePauseSlack is how long a merge may wait for commit passes beyond
// the time it ran. It matters at a merge's start only: a merge that has
// run for a while has that much to wait with. A maintenance pass runs many
// small merges (a table's lower tiers), each of which may wait this long
// before it has run: at a second each, a pass beside commits every 300 ms
// took seconds longer.
const mergePauseSlack = 100 * time.Millisecond

func newMergePause(ctx context.Context, passes *commitPasses) *mergePause {
	return &mergePause{passes: passes, ctx: ctx, begun: time.Now(), slack: passes.mergeSlack}
}

// wait waits for a running commit pass to end, within the merge's
// budget. A nil mergePause never waits.
func (m *mergePause) wait() {
	if m == nil || !m.passes.active() {
		return
	}
	ran := time.Since(m.begun) - m.waited
	budget := ran + m.slack - m.waited
	if budget <= 0 {
		return
	}
	m.waited += m.passes.waitIdle(m.ctx, budget)
}
