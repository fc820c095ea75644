package server

import (
	"context"
	"sync"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// flushGate spaces the flushes clients request. They bypass the commit
// interval, so without a bound a client calling Flush in a loop would make
// a snapshot per call in every table. At most one starts per interval;
// requests that arrive while one is due or running share the next one, which
// starts once the interval since the last has passed and the running one has
// ended. Every request thus gets a flush that started after it arrived, so
// what was acked before the request is covered, and none gets an error for
// asking too often.
type flushGate struct {
	interval time.Duration
	stop     <-chan struct{} // the server stopping: a waiting flush starts at once (and fails fast)
	run      func(context.Context, lakehousev1.FlushReason) (*lakehousev1.FlushResult, error)

	mu        sync.Mutex
	lastStart time.Time
	running   *flushCall // nil when none runs
	next      *flushCall // the flush new requests join; nil when none waits
}

// flushCall is one flush shared by the requests that joined it.
type flushCall struct {
	reason lakehousev1.FlushReason
	done   chan struct{}
	res    *lakehousev1.FlushResult
	err    error
}

func newFlushGate(interval time.Duration, stop <-chan struct{},
	run func(context.Context, lakehousev1.FlushReason) (*lakehousev1.FlushResult, error)) *flushGate {
	return &flushGate{interval: interval, stop: stop, run: run}
}

// flush requests a flush and waits for the result of the one it joins.
func (g *flushGate) flush(ctx context.Context, reason lakehousev1.FlushReason) (*lakehousev1.FlushResult, error) {
	if g.interval <= 0 {
		return g.run(ctx, reason)
	}
	g.mu.Lock()
	c := g.next
	if c == nil {
		c = &flushCall{reason: reason, done: make(chan struct{})}
		g.next = c
		go g.start(c, g.running, g.lastStart.Add(g.interval))
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err() // the flush still runs for the others
	}
}

// start runs c once prev (the running flush, if any) has ended and at has
// come.
func (g *flushGate) start(c, prev *flushCall, at time.Time) {
	if prev != nil {
		<-prev.done
	}
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-g.stop:
			t.Stop()
		}
	}
	g.mu.Lock()
	g.next, g.running, g.lastStart = nil, c, time.Now()
	g.mu.Unlock()
	// Not bound to a requester's context: the others still wait for it.
	// It ends when the server stops (errClosed).
	c.res, c.err = g.run(context.Background(), c.reason)
	g.mu.Lock()
	if g.running == c {
		g.running = nil
	}
	g.mu.Unlock()
	close(c.done)
}
