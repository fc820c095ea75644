package main

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// spinFor keeps its processor busy for d without yielding.
func spinFor(d time.Duration, done chan<- struct{}) {
	for s := time.Now(); time.Since(s) < d; {
	}
	close(done)
}

// wakeOften sleeps 100 µs at a time until stop closes.
func wakeOften(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		default:
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestAnalyzeSeesAWaitBehindABusyGoroutine traces, on one processor, a
// goroutine that sleeps briefly over and over beside one that computes for
// 60 ms without yielding: the sleeper waits for the runtime to preempt the
// other (10 ms or more), and the analysis must say so, under each
// goroutine's own function.
func TestAnalyzeSeesAWaitBehindABusyGoroutine(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("tracing unavailable: %v", err)
	}
	stop, wakerDone, spinDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go wakeOften(stop, wakerDone)
	time.Sleep(time.Millisecond)
	go spinFor(60*time.Millisecond, spinDone)
	<-spinDone
	close(stop)
	<-wakerDone
	trace.Stop()

	kinds, err := analyze(&buf)
	if err != nil {
		t.Fatal(err)
	}
	find := func(suffix string) *kind {
		for n, k := range kinds {
			if strings.HasSuffix(n, suffix) {
				return k
			}
		}
		t.Fatalf("no goroutine of %s in %d kinds", suffix, len(kinds))
		return nil
	}
	spin, waker := find(".spinFor"), find(".wakeOften")
	if len(spin.runs) == 0 || len(waker.waits) == 0 {
		t.Fatalf("spinFor ran %d times, wakeOften waited %d times", len(spin.runs), len(waker.waits))
	}
	var longestRun, longestWait time.Duration
	for _, r := range spin.runs {
		longestRun = max(longestRun, r)
	}
	for _, w := range waker.waits {
		longestWait = max(longestWait, w)
	}
	// Preemption comes after 10 ms; allow for a coarse clock.
	if longestRun < 5*time.Millisecond || longestWait < 5*time.Millisecond {
		t.Errorf("spinFor's longest run %v, wakeOften's longest wait %v: want both 5 ms or more", longestRun, longestWait)
	}
	var out bytes.Buffer
	report(&out, kinds, 20)
	if !strings.Contains(out.String(), "wakeOften") || !strings.Contains(out.String(), "spinFor") {
		t.Errorf("report lacks the goroutines:\n%s", out.String())
	}
}
