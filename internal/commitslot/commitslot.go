// Package commitslot defines the commit slots of multi-instance mode with
// the elected committer: the commit interval's multiples of Unix time. Each
// instance's scheduled commit (its flush) is at a slot's start, and a
// table's elected committer commits the table at most once per slot, a
// gather delay after the slot starts, so that every instance's part of the
// slot shares one snapshot and no stager waits long for it. The slots need
// no coordination beyond clocks kept in step (NTP): a skewed clock only
// makes a part wait for the next slot.
package commitslot

import "time"

// MaxGather bounds the gather delay (Gather).
const MaxGather = 2 * time.Second

// Of returns the number of the slot holding t. Every time before 1970 (a
// zero time.Time: never) is in slot -1.
func Of(t time.Time, interval time.Duration) int64 {
	if t.Unix() < 0 {
		return -1
	}
	return t.UnixNano() / int64(interval)
}

// Start returns the start of the slot holding t.
func Start(t time.Time, interval time.Duration) time.Time {
	return time.Unix(0, Of(t, interval)*int64(interval))
}

// Next returns the start of the first slot after the one holding t.
func Next(t time.Time, interval time.Duration) time.Time {
	return Start(t, interval).Add(interval)
}

// Gather is how long after a slot's start its commit waits for the
// instances' scheduled flushes to publish what they stage then: a quarter
// of the interval, at most MaxGather.
func Gather(interval time.Duration) time.Duration {
	return min(interval/4, MaxGather)
}
