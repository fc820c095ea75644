package server

import (
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
)

// commitClock schedules the flusher's commits: a commit interval after the
// last one started (see Reset), or, with Config.AlignCommits, at the next commit slot's start
// (internal/commitslot), the same instants on every instance so that the
// elected committer finds every instance's part of a slot at once. Only
// the flusher's goroutine uses it.
type commitClock struct {
	interval time.Duration
	aligned  bool
	timer    *time.Timer
	next     time.Time
}

func newCommitClock(interval time.Duration, aligned bool) *commitClock {
	c := &commitClock{interval: interval, aligned: aligned}
	c.next = c.after(time.Now())
	c.timer = time.NewTimer(time.Until(c.next))
	return c
}

// C fires when the next scheduled commit is due.
func (c *commitClock) C() <-chan time.Time { return c.timer.C }

// Next is when the next scheduled commit is due.
func (c *commitClock) Next() time.Time { return c.next }

// Reset schedules the next commit after one that started at started and
// just ended, whatever triggered it: an interval after its start, so that
// commits repeat every interval rather than every interval plus the time a
// commit takes (at 80k keyed changes/s with mirrors and a 1-s interval, a
// pass took about 0.45 s: the largest table's mirror then trailed a change
// by up to 2.4 s at p99 instead of 1.8 s), but at least a quarter interval
// after its end, so that a commit slower than the interval leaves time to
// stage and commits do not run back to back. With AlignCommits, the next
// commit slot after now.
func (c *commitClock) Reset(started time.Time) {
	now := time.Now()
	if c.aligned {
		c.next = c.after(now)
	} else {
		c.next = started.Add(c.interval)
		if earliest := now.Add(c.interval / 4); c.next.Before(earliest) {
			c.next = earliest
		}
	}
	c.timer.Reset(time.Until(c.next))
}

func (c *commitClock) Stop() { c.timer.Stop() }

func (c *commitClock) after(now time.Time) time.Time {
	if c.aligned {
		return commitslot.Next(now, c.interval)
	}
	return now.Add(c.interval)
}
