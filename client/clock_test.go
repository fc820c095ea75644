package client

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced Clock. A timer fires when Advance reaches
// its time; a timer made for a time already reached fires at once, as
// time.NewTimer does.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk  *fakeClock
	c    chan time.Time
	at   time.Time
	done bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1700000000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, c: make(chan time.Time, 1), at: c.now.Add(d)}
	if d <= 0 {
		t.done = true
		t.c <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d and fires the timers it reaches.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	live := c.timers[:0]
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			t.c <- c.now
		}
		if !t.done {
			live = append(live, t)
		}
	}
	clear(c.timers[len(live):])
	c.timers = live
}

// advanceUntil advances clk by step, giving the client's goroutines a moment
// after each step, until cond holds; it fails the test if cond does not hold
// within 10 s of wall-clock time.
func advanceUntil(t testing.TB, clk *fakeClock, step time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached after advancing the fake clock to %s", clk.Now().Format(time.RFC3339Nano))
		}
		clk.Advance(step)
		waitWall(5*time.Millisecond, cond)
	}
}

// waitWall polls cond for up to d of wall-clock time; it reports whether
// cond held.
func waitWall(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(200 * time.Microsecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// drive advances clk by step every millisecond of wall-clock time until the
// returned stop (idempotent) is called: a fast clock for tests whose clients go through
// many timers (backoffs, reconnects, timeouts).
func drive(clk *fakeClock, step time.Duration) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				clk.Advance(step)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-stopped }) }
}

func TestFakeClock(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Now()
	a := clk.NewTimer(10 * time.Millisecond)
	b := clk.NewTimer(0)
	select {
	case <-b.C():
	default:
		t.Fatal("a timer for now did not fire at once")
	}
	clk.Advance(9 * time.Millisecond)
	select {
	case <-a.C():
		t.Fatal("fired early")
	default:
	}
	clk.Advance(time.Millisecond)
	if got := <-a.C(); !got.Equal(t0.Add(10 * time.Millisecond)) {
		t.Fatalf("fired at %v", got)
	}
	if a.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
	c := clk.NewTimer(time.Second)
	if !c.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	clk.Advance(time.Hour)
	select {
	case <-c.C():
		t.Fatal("a stopped timer fired")
	default:
	}
}
