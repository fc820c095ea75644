package pace

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
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
	var turns atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			turns.Add(1)
			runtime.Gosched()
		}
	}()

	var (
		p               Pacer
		most, units     int
		lastTurns       = turns.Load()
		deadline        = time.Now().Add(200 * time.Millisecond)
		sinceTurnChange int
	)
	for time.Now().Before(deadline) {
		for s := time.Now(); time.Since(s) < unit; {
		}
		units++
		sinceTurnChange++
		if n := turns.Load(); n != lastTurns {
			lastTurns = n
			sinceTurnChange = 0
		}
		most = max(most, sinceTurnChange)
		p.Yield()
	}
	close(stop)
	<-done
	// Interval is 20 units; preemption takes 200 or more.
	if limit := 3 * int(Interval/unit); most > limit {
		t.Errorf("the work ran %d units (of %v) between two turns of the other goroutine, want at most %d", most, unit, limit)
	}
	t.Logf("%d units, at most %d between turns, %d turns", units, most, turns.Load())
}

func TestNilPacerDoesNotYield(t *testing.T) {
	var p *Pacer
	p.Yield() // must not panic
}
