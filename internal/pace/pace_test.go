package pace

import (
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dot-do/lakehouse-rpc/internal/testing/turns"
)

// TestYieldLetsOthersRun runs CPU-bound work that yields, on one processor,
// beside a goroutine that takes a turn whenever it gets one. Between two of
// that goroutine's turns the work gets through about Interval of units;
// without the yields it runs until the runtime preempts it (10 ms or more),
// ten times as many.
func TestYieldLetsOthersRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	const unit = 50 * time.Microsecond
	counter := turns.Start()

	var (
		p               Pacer
		most, units     int
		lastTurns       = counter.Turns()
		deadline        = time.Now().Add(200 * time.Millisecond)
		sinceTurnChange int
	)
	for time.Now().Before(deadline) {
		for s := time.Now(); time.Since(s) < unit; {
		}
		units++
		sinceTurnChange++
		if n := counter.Turns(); n != lastTurns {
			lastTurns = n
			sinceTurnChange = 0
		}
		most = max(most, sinceTurnChange)
		p.Yield()
	}
	counter.Stop()
	// Interval is 20 units; preemption takes 200 or more.
	if limit := 3 * int(Interval/unit); most > limit {
		t.Errorf("the work ran %d units (of %v) between two turns of the other goroutine, want at most %d", most, unit, limit)
	}
	t.Logf("%d units, at most %d between turns, %d turns", units, most, counter.Turns())
}

func TestNilPacerDoesNotYield(t *testing.T) {
	var p *Pacer
	p.Yield() // must not panic
}
