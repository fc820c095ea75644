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
		time.Sleep(iv / 3) // the commit takes a while
		c.Reset()
		if until := time.Until(c.Next()); until <= 0 || until > iv || c.Next().UnixNano()%int64(iv) != 0 {
			t.Fatalf("after Reset: next at %v, in %v", c.Next(), until)
		}
	}
	u := newCommitClock(iv, false)
	defer u.Stop()
	start := time.Now()
	<-u.C()
	u.Reset()
	if d := u.Next().Sub(start); d < 2*iv {
		t.Errorf("unaligned: next commit %v after the start, want an interval after the first (%v)", d, 2*iv)
	}
}

// TestManualReasonName: the sink tells manual commits (a Flush request,
// a drain) by this name; an elected committer commits them at once.
func TestManualReasonName(t *testing.T) {
	if got := reasonName(lakehousev1.FlushReason_FLUSH_REASON_MANUAL); got != sink.ReasonManual {
		t.Errorf("manual commits are named %q, the sink expects %q", got, sink.ReasonManual)
	}
}
