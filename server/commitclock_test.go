package server

import (
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCommitClockAligned: with AlignCommits the scheduled commits are at
// the interval's multiples of Unix time, also after a commit that some
// other trigger started; without it, an interval after the last commit.
func TestCommitClockAligned(t *testing.T) {
	const iv = 200 * time.Millisecond
	c := newCommitClock(iv, true)
	defer c.Stop()
	for range 3 {
		fired := <-c.C()
		if n := c.Next().UnixNano(); n%int64(iv) != 0 {
			t.Fatalf("aligned commit scheduled at %v, not a multiple of %v", c.Next(), iv)
		}
		if late := fired.Sub(c.Next()); late < 0 || late > iv {
			t.Fatalf("fired at %v for %v", fired, c.Next())
		}
		started := time.Now()
		time.Sleep(iv / 3) // the commit takes a while
		c.Reset(started)
		if until := time.Until(c.Next()); until <= 0 || until > iv || c.Next().UnixNano()%int64(iv) != 0 {
			t.Fatalf("after Reset: next at %v, in %v", c.Next(), until)
		}
	}
	u := newCommitClock(iv, false)
	defer u.Stop()
	start := time.Now()
	<-u.C()
	u.Reset(time.Now())
	if d := u.Next().Sub(start); d < 2*iv {
		t.Errorf("unaligned: next commit %v after the start, want an interval after the first (%v)", d, 2*iv)
	}
}

// TestCommitClockStartToStart: without AlignCommits the next commit is an
// interval after the last one started, not after it ended, unless that
// commit took more than three quarters of an interval: then a quarter
// interval after its end.
func TestCommitClockStartToStart(t *testing.T) {
	const iv = time.Hour // the timer never fires: only Next is checked
	c := newCommitClock(iv, false)
	defer c.Stop()
	now := time.Now()
	started := now.Add(-iv / 4) // a commit that took a quarter interval
	c.Reset(started)
	if got := c.Next(); got != started.Add(iv) {
		t.Errorf("after a commit of a quarter interval: next at start + %v, want start + %v", got.Sub(started), iv)
	}
	started = time.Now().Add(-7 * iv / 8) // one that took seven eighths
	end := time.Now()
	c.Reset(started)
	if got := c.Next(); got.Before(end.Add(iv/4)) || got.After(time.Now().Add(iv/4)) {
		t.Errorf("after a commit of seven eighths of an interval: next %v after its end, want %v", got.Sub(end), iv/4)
	}
}

// TestManualReasonName: the sink tells manual commits (a Flush request,
// a drain) by this name; an elected committer commits them at once.
func TestManualReasonName(t *testing.T) {
	if got := reasonName(lakehousev1.FlushReason_FLUSH_REASON_MANUAL); got != sink.ReasonManual {
		t.Errorf("manual commits are named %q, the sink expects %q", got, sink.ReasonManual)
	}
}
