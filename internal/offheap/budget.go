package offheap

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// budgetStep is the least change of the mapped bytes that moves the Go
// runtime's limit: a merge maps its blocks a few at a time.
const budgetStep = 4 << 20

// Budget counts the bytes its allocators have mapped, and shares the
// process's soft memory limit between them and the Go heap: while they
// hold bytes, the runtime's limit (runtime/debug.SetMemoryLimit) is lowered
// by as much, so that the two together stay near the process's limit. The
// runtime counts only its own memory; without a Budget a saturated process
// would hold the Go heap at the limit and the allocators' bytes besides.
// Govern (govern.go) moves the process's limit itself, between a floor and
// the one the Budget was made with.
type Budget struct {
	// unlimited: the process has no soft limit; the runtime's limit is
	// left alone and the Budget only counts.
	unlimited bool
	mapped    atomic.Int64

	// gcPercent is the process's GOGC when the Budget was made; -1 when
	// the Budget leaves it alone (no limit, or the collector off).
	gcPercent int

	mu sync.Mutex
	// Guarded by mu.
	limit int64 // the process's soft limit (Govern moves it)
	set   int64 // the runtime limit last set, or limit
	holds int   // Hold calls not released
}

// NewBudget returns a Budget sharing limit, the process's soft memory
// limit in bytes; 0, a negative value or math.MaxInt64 (the runtime's "no
// limit") mean none: the Budget then only counts.
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		limit = math.MaxInt64
	}
	b := &Budget{unlimited: limit == math.MaxInt64, limit: limit, set: limit, gcPercent: -1}
	if !b.unlimited {
		b.gcPercent = currentGCPercent()
	}
	return b
}

// currentGCPercent returns the runtime's GOGC, -1 when the collector is
// off.
func currentGCPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[0].Value.Uint64() > math.MaxInt32 {
		return -1
	}
	return int(s[0].Value.Uint64())
}

// Hold marks work that holds much memory for a few seconds (a merge) until
// the returned function is called. While any is held, the collector keeps
// half its usual room (GOGC): with GOGC=100 the heap may grow to 1.5 times
// what was live at the last collection instead of twice, and a merge's RSS
// peak is made of that room. The collections it adds are those of the
// merges' seconds only. A Budget without a limit leaves the collector alone.
func (b *Budget) Hold() (release func()) {
	if b == nil || b.gcPercent <= 0 {
		return func() {}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holds++; b.holds == 1 {
		debug.SetGCPercent(max(b.gcPercent/2, 1))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.holds--; b.holds == 0 {
				debug.SetGCPercent(b.gcPercent)
			}
		})
	}
}

// Mapped returns the bytes mapped by the Budget's allocators now.
func (b *Budget) Mapped() int64 { return b.mapped.Load() }

// RuntimeLimit returns the runtime limit the Budget last set: the
// process's limit less the mapped bytes, within budgetStep.
func (b *Budget) RuntimeLimit() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.set
}

// add counts n more (or, negative, fewer) mapped bytes.
func (b *Budget) add(n int64) {
	if b == nil {
		return
	}
	if b.unlimited {
		b.mapped.Add(n)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	mapped := b.mapped.Add(n)
	b.applyLocked(mapped, false)
}

// applyLocked sets the runtime's limit to the process's less the mapped
// bytes, when that moved by budgetStep or more (or always, with force).
func (b *Budget) applyLocked(mapped int64, force bool) {
	// Never below half the process's limit: the heap needs room to
	// work, and a collector running without pause costs more than the
	// overshoot.
	want := max(b.limit-mapped, b.limit/2)
	if d := want - b.set; force || d >= budgetStep || -d >= budgetStep || (mapped == 0 && want != b.set) {
		debug.SetMemoryLimit(want)
		b.set = want
	}
}

// Limit returns the process's soft limit the Budget shares (which Govern
// moves); math.MaxInt64: none.
func (b *Budget) Limit() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit
}

// setLimit moves the process's soft limit to limit and the runtime's with
// it; a Budget without a limit ignores it.
func (b *Budget) setLimit(limit int64) {
	if b.unlimited {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if limit == b.limit {
		return
	}
	b.limit = limit
	b.applyLocked(b.mapped.Load(), true)
}
