package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Send adds e to the current batch; the batch is sent when full or after the
// batch timeout. It blocks while the pending batches are at their limit,
// until there is room or ctx ends. It fails fast with an error matching
// ErrCircuitOpen while the circuit breaker is open. e's slices must not be
// modified afterwards.
func (c *Client) Send(ctx context.Context, e Entry) error {
	if err := c.breaker.check(); err != nil {
		return err
	}
	c.mu.Lock()
	err := c.addLocked(ctx, &e)
	c.mu.Unlock()
	c.flushEvents()
	return err
}

// SendMany adds entries in order as Send does. On error the entries before
// the failing one were accepted (the error says how many).
func (c *Client) SendMany(ctx context.Context, entries []Entry) error {
	if err := c.breaker.check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.flushEvents()
	}()
	for i := range entries {
		if err := c.addLocked(ctx, &entries[i]); err != nil {
			return fmt.Errorf("client: %d of %d entries accepted: %w", i, len(entries), err)
		}
	}
	return nil
}

// SendBatch sends entries as one batch of their own (after the current
// batch, which it seals first) and waits for its ack. If ctx ends first, the
// batch stays pending and is still delivered; the error then matches
// ctx.Err(). A batch the client gives up on returns a *BatchError.
func (c *Client) SendBatch(ctx context.Context, entries []Entry) (Ack, error) {
	if len(entries) == 0 {
		return Ack{}, errors.New("client: empty batch")
	}
	if err := c.breaker.check(); err != nil {
		return Ack{}, err
	}
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return Ack{}, err
	}
	if err := c.sealWaitLocked(ctx); err != nil {
		c.mu.Unlock()
		return Ack{}, err
	}
	if err := c.waitRoomLocked(ctx); err != nil {
		c.mu.Unlock()
		return Ack{}, err
	}
	n := 0
	for i := range entries {
		n += entries[i].EncodedSize()
	}
	b := c.pushLocked(entries, n)
	c.mu.Unlock()
	c.flushEvents()
	select {
	case <-b.done:
		return b.ack, b.err
	case <-ctx.Done():
		return Ack{}, fmt.Errorf("client: waiting for the ack of a batch: %w", ctx.Err())
	}
}

// Flush sends the current batch, waits until every batch sealed so far is
// acknowledged (in wait-for-persisted mode: persisted), and asks the server
// to commit its buffer now (the unary Flush RPC). It returns the server's
// flush result and, joined, the errors reported since the last Flush or
// Close (each *BatchError is returned once).
func (c *Client) Flush(ctx context.Context) (*lakehousev1.FlushResult, error) {
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		errs := c.takeErrsLocked()
		c.mu.Unlock()
		return nil, errors.Join(append(errs, err)...)
	}
	if err := c.sealWaitLocked(ctx); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	target := c.q.lastID()
	c.mu.Unlock()
	c.flushEvents()
	var errs []error
	if err := c.waitFor(ctx, func() bool { return c.q.ackedThrough(target) }); err != nil {
		errs = append(errs, fmt.Errorf("client: flush: waiting for acks: %w", err))
	}
	var res *lakehousev1.FlushResult
	if len(errs) == 0 {
		rpc, _ := c.streamRPC()
		resp, err := rpc.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("client: flush RPC: %w", err))
		default:
			res = resp.GetResult()
			if res != nil && !res.GetSuccess() && !res.GetUsedFallback() {
				errs = append(errs, fmt.Errorf("client: server flush failed: %s", res.GetError()))
			}
		}
	}
	if len(errs) == 0 && c.cfg.waitPersisted {
		if err := c.waitFor(ctx, func() bool { return c.q.releasedThrough(target) }); err != nil {
			errs = append(errs, fmt.Errorf("client: flush: waiting for persisted: %w", err))
		}
	}
	c.mu.Lock()
	errs = append(c.takeErrsLocked(), errs...)
	c.mu.Unlock()
	return res, errors.Join(errs...)
}

// addLocked adds e to the current batch, sealing the batch first when e
// does not fit (waiting for room among the pending batches) and after when
// it is full.
func (c *Client) addLocked(ctx context.Context, e *Entry) error {
	sz := e.EncodedSize()
	for {
		if err := c.usableLocked(); err != nil {
			return err
		}
		full := len(c.cur) > 0 && (len(c.cur) >= c.cfg.maxBatchEntries || c.curBytes+sz > c.cfg.maxBatchBytes)
		if !full {
			break
		}
		if c.q.hasRoom() {
			c.sealLocked()
			break
		}
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
	}
	if len(c.cur) == 0 {
		c.curStart = c.clock.Now()
		if c.cur == nil {
			c.cur = make([]Entry, 0, min(c.cfg.maxBatchEntries, 1024))
		}
		select {
		case c.sealWake <- struct{}{}:
		default:
		}
	}
	c.cur = append(c.cur, *e)
	c.curBytes += sz
	if len(c.cur) >= c.cfg.maxBatchEntries && c.q.hasRoom() {
		c.sealLocked()
	}
	return nil
}

// sealLocked turns the current batch into a pending batch (ignoring the
// pending limit: callers check it).
func (c *Client) sealLocked() {
	if len(c.cur) == 0 {
		return
	}
	c.pushLocked(c.cur, c.curBytes)
	c.cur = nil
	c.curBytes = 0
}

func (c *Client) pushLocked(entries []Entry, nbytes int) *batch {
	b := c.q.push(entries, nbytes, c.clock.Now())
	c.broadcastLocked()
	c.wakeWriter()
	return b
}

// sealWaitLocked seals the current batch, waiting for room first.
func (c *Client) sealWaitLocked(ctx context.Context) error {
	for len(c.cur) > 0 && !c.q.hasRoom() && !c.closing {
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
		if err := c.usableLocked(); err != nil {
			return err
		}
	}
	c.sealLocked()
	return nil
}

// waitRoomLocked waits until a batch may be pushed.
func (c *Client) waitRoomLocked(ctx context.Context) error {
	for !c.q.hasRoom() {
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
		if err := c.usableLocked(); err != nil {
			return err
		}
	}
	return nil
}

// sealer seals the current batch once it is older than the batch timeout.
func (c *Client) sealer() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		wait := time.Duration(-1)
		var ch <-chan struct{}
		if len(c.cur) > 0 && c.failErr == nil {
			now := c.clock.Now()
			dl := c.curStart.Add(c.cfg.batchTimeout)
			if !now.Before(dl) {
				if c.q.hasRoom() || c.closing {
					c.sealLocked()
					c.mu.Unlock()
					continue
				}
				ch = c.changed
			} else {
				wait = dl.Sub(now)
			}
		}
		c.mu.Unlock()
		var tc <-chan time.Time
		var t Timer
		if wait >= 0 {
			t = c.clock.NewTimer(wait)
			tc = t.C()
		}
		select {
		case <-c.sealWake:
		case <-ch:
		case <-tc:
		case <-c.ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if c.ctx.Err() != nil {
			return
		}
	}
}
