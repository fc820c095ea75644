package server

import (
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
)

// commitClock schedules the flusher's commits: a commit interval after the
// last one, or, with Config.AlignCommits, at the next commit slot's start
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

// Reset schedules the next commit after one that just ended, whatever
// triggered it.
func (c *commitClock) Reset() {
	c.next = c.after(time.Now())
	c.timer.Reset(time.Until(c.next))
}

func (c *commitClock) Stop() { c.timer.Stop() }

func (c *commitClock) after(now time.Time) time.Time {
	if c.aligned {
		return commitslot.Next(now, c.interval)
	}
	return now.Add(c.interval)
}
