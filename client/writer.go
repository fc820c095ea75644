package client

import (
	"fmt"
	"math"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// sendItem is a transmission, copied out of the queue so that it can be
// encoded without the lock.
type sendItem struct {
	b       *batch
	seq     uint64
	id, tx  uint64
	retry   bool
	ts      int64
	entries []Entry
}

// writeLoop is the only sender on the stream. Each turn it checks the ack
// timeout of the oldest batch in flight and the delivery timeouts, then sends
// the next queued batch (unless flow control or the circuit breaker holds
// it back) or a heartbeat, or waits for the next event.
func (c *Client) writeLoop(stream cdcStream, readerDone <-chan struct{}, readerErr *error) error {
	var buf, corr []byte
	var nextHB time.Time
	if c.cfg.heartbeatInterval > 0 {
		nextHB = c.clock.Now().Add(c.cfg.heartbeatInterval)
	}
	for {
		c.mu.Lock()
		if c.stopping {
			c.mu.Unlock()
			return c.closeStream(stream, readerDone)
		}
		if err := c.sessionErr; err != nil {
			c.sessionErr = nil
			c.mu.Unlock()
			return err
		}
		if c.failErr != nil {
			c.mu.Unlock()
			return errStopped
		}
		now := c.clock.Now()
		wait := time.Duration(math.MaxInt64)
		var item *sendItem
		var req *lakehousev1.StreamRequest
		if b := c.q.oldestSent(); b != nil {
			dl := b.lastSent.Add(c.cfg.ackTimeout)
			if !now.Before(dl) {
				b.failures++
				b.lastReason = lakehousev1.NackReason_NACK_REASON_UNSPECIFIED
				c.mu.Unlock()
				return fmt.Errorf("%w: batch %d after %s", ErrAckTimeout, b.seq, c.cfg.ackTimeout)
			}
			wait = min(wait, dl.Sub(now))
		}
		if exp := c.expireLocked(now); !exp.IsZero() {
			wait = min(wait, exp.Sub(now))
		}
		if now.Before(c.resumeAt) {
			wait = min(wait, c.resumeAt.Sub(now))
		} else if c.slow && c.q.sent() > 0 {
			// wait for an ack
		} else if b := c.q.nextQueued(); b != nil {
			readyAt, probeOut := c.breaker.readyAt()
			switch {
			case probeOut:
				// wait for the probe's outcome
			case !readyAt.IsZero() && now.Before(readyAt):
				wait = min(wait, readyAt.Sub(now))
			default:
				if ok, _, _, _ := c.breaker.acquire(false); ok {
					item = c.transmitLocked(b, now)
				}
			}
		}
		if item == nil && !nextHB.IsZero() {
			if !now.Before(nextHB) {
				req = &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{Heartbeat: &lakehousev1.Heartbeat{
					TimestampMs: now.UnixMilli(), PendingEntries: uint64(c.q.entries),
				}}}
				c.st.heartbeats++
				nextHB = now.Add(c.cfg.heartbeatInterval)
			} else {
				wait = min(wait, nextHB.Sub(now))
			}
		}
		c.mu.Unlock()
		c.flushEvents()

		if item != nil {
			corr = appendCorr(corr[:0], item.id, item.tx)
			var err error
			req, buf, err = c.encode(item, buf, corr)
			if err != nil {
				c.breaker.release()
				c.mu.Lock()
				c.giveUpLocked(item.b, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT, fmt.Errorf("client: encoding batch: %w", err), true)
				c.mu.Unlock()
				c.flushEvents()
				continue
			}
			size := len(buf)
			if c.cfg.mode == ModeStructured {
				size = item.b.nbytes
			}
			c.mu.Lock()
			c.st.bytesSent += uint64(size)
			item.b.lastSize = size
			c.mu.Unlock()
		}
		if req != nil {
			if err := stream.Send(req); err != nil {
				// The reader has the stream's status; give it a moment.
				t := c.clock.NewTimer(time.Second)
				select {
				case <-readerDone:
					err = *readerErr
				case <-t.C():
				}
				t.Stop()
				return streamErr(err, nil)
			}
			continue
		}
		var tc <-chan time.Time
		var t Timer
		if wait != time.Duration(math.MaxInt64) {
			t = c.clock.NewTimer(wait)
			tc = t.C()
		}
		var err error
		select {
		case <-c.wake:
		case <-tc:
		case <-readerDone:
			err = streamErr(*readerErr, nil)
		case <-c.ctx.Done():
			err = errStopped
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return err
		}
	}
}

// transmitLocked starts a transmission of the queued batch b.
func (c *Client) transmitLocked(b *batch, now time.Time) *sendItem {
	if c.q.transmit(b, now) {
		c.st.batchesSent++
		c.st.entriesSent += uint64(len(b.entries))
	} else {
		c.st.retried++
	}
	return &sendItem{b: b, seq: b.seq, id: b.id, tx: b.tx, retry: b.attempts > 1, ts: b.ts, entries: b.entries}
}

// encode builds the request for item, reusing buf for the binary frame.
func (c *Client) encode(item *sendItem, buf, corr []byte) (*lakehousev1.StreamRequest, []byte, error) {
	if c.cfg.mode == ModeStructured {
		pb := &lakehousev1.Batch{
			SequenceNumber: item.seq,
			TimestampMs:    item.ts,
			SourceId:       c.sourceID,
			CorrelationId:  string(corr),
			IsRetry:        item.retry,
			Entries:        make([]*lakehousev1.Entry, len(item.entries)),
		}
		for i := range item.entries {
			e := &item.entries[i]
			if e.Op > codec.OpDelete {
				return nil, buf, fmt.Errorf("entries[%d]: %w", i, codec.ErrUnknownOperation)
			}
			pb.Entries[i] = &lakehousev1.Entry{
				Sequence:    e.Sequence,
				TimestampMs: int64(e.Timestamp),
				Operation:   protomap.Operation(e.Op),
				Table:       string(e.Table),
				RowId:       string(e.RowID),
				Before:      string(e.Before),
				After:       string(e.After),
			}
		}
		return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: pb}}, buf, nil
	}
	cb := codec.Batch{
		Timestamp:     uint64(item.ts),
		Sequence:      item.seq,
		Retry:         item.retry,
		SourceID:      c.srcBytes,
		CorrelationID: corr,
		Entries:       item.entries,
	}
	frame, err := codec.AppendBatch(buf[:0], &cb)
	if err != nil {
		return nil, buf, err
	}
	return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}, frame, nil
}
