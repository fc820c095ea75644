// Package turns measures, in tests, how often a goroutine that is always
// ready to run gets a processor while other work runs: on one processor
// (GOMAXPROCS 1), each of its turns is a moment the work stepped aside or was
// preempted.
package turns

import (
	"runtime"
	"sync/atomic"
)

// Counter is a goroutine that counts its turns, yielding after each.
type Counter struct {
	n    atomic.Int64
	stop chan struct{}
	done chan struct{}
}

// Start starts a counter and lets it take its first turn.
func Start() *Counter {
	c := &Counter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			c.n.Add(1)
			runtime.Gosched()
		}
	}()
	runtime.Gosched()
	return c
}

// Turns returns the turns taken so far.
func (c *Counter) Turns() int64 { return c.n.Load() }

// Stop ends the counter's goroutine and waits for it.
func (c *Counter) Stop() {
	close(c.stop)
	<-c.done
}
