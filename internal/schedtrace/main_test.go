package main

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// spinFor wakes the goroutine that waits on wake, then keeps its processor
// busy for d without yielding.
func spinFor(d time.Duration, wake chan<- struct{}, done chan<- struct{}) {
	// A goroutine started by another may run on the rest of its starter's
	// time slice: begin one of its own, so that the preemption is 10 ms
	// after the wake.
	runtime.Gosched()
	wake <- struct{}{}
	for s := time.Now(); time.Since(s) < d; {
	}
	close(done)
}

// waitForWake returns once woken.
func waitForWake(wake <-chan struct{}, done chan<- struct{}) {
	<-wake
	close(done)
}

// TestAnalyzeSeesAWaitBehindABusyGoroutine traces, on one processor, a
// goroutine that another wakes and then keeps the processor from for 60 ms
// without yielding: the woken goroutine is runnable until the runtime
// preempts the other (10 ms or more after it began to run), and the
// analysis must say so, under each goroutine's own function. (A goroutine
// woken by a timer would not do: the timer fires only when the processor
// looks at it, after the preemption.)
func TestAnalyzeSeesAWaitBehindABusyGoroutine(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("tracing unavailable: %v", err)
	}
	wake, waitDone, spinDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go waitForWake(wake, waitDone)
	time.Sleep(time.Millisecond) // waitForWake blocks on wake
	go spinFor(60*time.Millisecond, wake, spinDone)
	<-spinDone
	<-waitDone
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
	spin, waker := find(".spinFor"), find(".waitForWake")
	if len(spin.runs) == 0 || len(waker.waits) == 0 {
		t.Fatalf("spinFor ran %d times, waitForWake waited %d times", len(spin.runs), len(waker.waits))
	}
	var longestRun, longestWait time.Duration
	for _, r := range spin.runs {
		longestRun = max(longestRun, r)
	}
	for _, w := range waker.waits {
		longestWait = max(longestWait, w)
	}
	t.Logf("spinFor's longest run %v, waitForWake's longest wait %v", longestRun, longestWait)
	// Preemption comes 10 ms or more into a slice; allow for a coarse
	// clock. (Woken by a timer instead, the wait was 0.1 ms.)
	if longestRun < 3*time.Millisecond || longestWait < 3*time.Millisecond {
		t.Errorf("spinFor's longest run %v, waitForWake's longest wait %v: want both 3 ms or more", longestRun, longestWait)
	}
	var out bytes.Buffer
	report(&out, kinds, 20)
	if !strings.Contains(out.String(), "waitForWake") || !strings.Contains(out.String(), "spinFor") {
		t.Errorf("report lacks the goroutines:\n%s", out.String())
	}
}
