package client

import (
	"errors"
	"testing"
	"time"
)

func TestBreakerTransitions(t *testing.T) {
	const closed, open, halfOpen = "closed", "open", "half-open"
	type step struct {
		op        string // fail, ok, allow, deny, wait
		d         time.Duration
		wantState string // "" = not checked
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"opens after 5 consecutive failures", []step{
			{op: "fail", wantState: closed}, {op: "fail", wantState: closed},
			{op: "fail", wantState: closed}, {op: "fail", wantState: closed},
			{op: "fail", wantState: open}, {op: "deny", wantState: open},
		}},
		{"a success resets the count", []step{
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "ok", wantState: closed},
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail", wantState: closed},
		}},
		{"half-open after the open time allows one probe, success closes", []step{
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail", wantState: open},
			{op: "wait", d: 999 * time.Millisecond, wantState: open}, {op: "deny"},
			{op: "wait", d: time.Millisecond, wantState: halfOpen},
			{op: "allow", wantState: halfOpen}, {op: "deny", wantState: halfOpen},
			{op: "ok", wantState: closed}, {op: "allow"}, {op: "allow"},
		}},
		{"failed probe reopens for twice as long", []step{
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"},
			{op: "wait", d: time.Second, wantState: halfOpen}, {op: "allow"},
			{op: "fail", wantState: open},
			{op: "wait", d: 1999 * time.Millisecond, wantState: open},
			{op: "wait", d: time.Millisecond, wantState: halfOpen}, {op: "allow"},
			{op: "fail", wantState: open},
			{op: "wait", d: 3999 * time.Millisecond, wantState: open},
			{op: "wait", d: time.Millisecond, wantState: halfOpen},
		}},
		{"open time is capped at 30 s", []step{
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "fail"}, // 1 s
			{op: "wait", d: time.Second}, {op: "allow"}, {op: "fail"}, // 2 s
			{op: "wait", d: 2 * time.Second}, {op: "allow"}, {op: "fail"}, // 4 s
			{op: "wait", d: 4 * time.Second}, {op: "allow"}, {op: "fail"}, // 8 s
			{op: "wait", d: 8 * time.Second}, {op: "allow"}, {op: "fail"}, // 16 s
			{op: "wait", d: 16 * time.Second}, {op: "allow"}, {op: "fail"}, // 32 s -> 30 s
			{op: "wait", d: 30 * time.Second, wantState: halfOpen},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			var changes []string
			b := NewCircuitBreaker(BreakerConfig{Clock: clk, OnStateChange: func(from, to BreakerState) {
				changes = append(changes, from.String()+">"+to.String())
			}})
			for i, s := range tc.steps {
				switch s.op {
				case "fail":
					b.Failure()
				case "ok":
					b.Success()
				case "wait":
					clk.Advance(s.d)
				case "allow":
					if err := b.Allow(); err != nil {
						t.Fatalf("step %d: Allow: %v", i, err)
					}
				case "deny":
					err := b.Allow()
					var oe *CircuitOpenError
					if !errors.Is(err, ErrCircuitOpen) || !errors.As(err, &oe) {
						t.Fatalf("step %d: Allow: %v, want a rejection", i, err)
					}
				}
				if s.wantState != "" {
					if got := b.State().String(); got != s.wantState {
						t.Fatalf("step %d (%s): state %s, want %s (changes %v)", i, s.op, got, s.wantState, changes)
					}
				}
			}
			t.Logf("changes: %v", changes)
		})
	}
}

func TestBreakerStats(t *testing.T) {
	clk := newFakeClock()
	b := NewCircuitBreaker(BreakerConfig{Clock: clk, FailureThreshold: 2, OpenTimeout: time.Second})
	b.Success()
	b.Failure()
	clk.Advance(time.Second)
	b.Failure()
	_ = b.Allow()
	_ = b.Allow()
	st := b.Stats()
	if st.State != BreakerOpen || st.Failures != 2 || st.Successes != 1 || st.Rejections != 2 || st.Opens != 1 ||
		!st.LastStateChange.Equal(clk.Now()) || !st.OpenUntil.Equal(clk.Now().Add(time.Second)) || st.ConsecutiveFailures != 2 {
		t.Fatalf("stats %+v", st)
	}
	b.Reset()
	if st := b.Stats(); st.State != BreakerClosed || st.ConsecutiveFailures != 0 {
		t.Fatalf("after Reset: %+v", st)
	}
}

// TestClientUsesInjectedClock: the client's breaker and timers run on the
// injected clock: with the clock stopped, a partial batch is never sealed.
func TestClientUsesInjectedClock(t *testing.T) {
	f := startFake(t)
	clk := newFakeClock()
	c := dialTest(t, f.Addr(), "src", WithClock(clk), WithBatchTimeout(time.Second))
	if err := c.Send(t.Context(), testEntries(0, 1)[0]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if st := c.Stats(); st.BatchesSent != 0 || st.BufferedEntries != 1 {
		t.Fatalf("sent before the fake clock moved: %+v", st)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.Stats().BatchesAcked == 0 && time.Now().Before(deadline) {
		clk.Advance(100 * time.Millisecond)
		time.Sleep(5 * time.Millisecond)
	}
	if c.Stats().BatchesAcked != 1 {
		t.Fatal("batch not sent after the fake clock passed the batch timeout")
	}
	if got := c.Breaker().Stats().LastStateChange; !got.IsZero() {
		t.Fatalf("breaker changed state: %v", got)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	cases := []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}}
	for _, tc := range cases {
		got := h.Quantile(tc.q)
		if d := got - tc.want; d < -tc.want/16 || d > tc.want/16 {
			t.Errorf("q%.2f = %s, want about %s", tc.q, got, tc.want)
		}
	}
	var o Histogram
	o.Record(5 * time.Second)
	h.Merge(&o)
	if h.Count() != 1001 || h.Max() != 5*time.Second {
		t.Fatalf("merge: count %d max %s", h.Count(), h.Max())
	}
	if s := h.Summary(); s.Count != 1001 || s.MaxMs != 5000 {
		t.Fatalf("summary %+v", s)
	}
}
