package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Frames drives cfg.Sources gRPC streams with pooled W1 frames (FramePool):
// the cheap load generator, which behaves as a child that encodes on its own
// machine would appear to the server.
//
// With cfg.Rate zero it is a closed loop: each source keeps up to
// cfg.MaxPending batches unanswered. With cfg.Rate N it is an open loop:
// batch k of a source is due at a fixed time, so that the sources together
// offer N entries/s whatever the server does, and latencies are measured
// from that scheduled time, so a stall of the server or of the sender is
// not hidden. A refused batch (buffer_full and other retryable nacks) is sent
// again after the server's retry delay, keeping its scheduled time, alone
// until it is acknowledged: the server takes a stream's batches only in
// order, so batches pipelined behind a refused one are refused too
// (invalid_sequence), and sending them with a retry that is refused again
// would only provoke more of those. The nacks of batches that were already
// in flight behind a refusal are counted apart (Summary.StaleNacks): they
// are the expected echo of the refusal, not failures. Acks and persisted
// watermarks are recorded per batch.
func Frames(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.Rate < 0 {
		return nil, errors.New("bench: negative rate")
	}
	cfg.SourcePrefix += "-frames"
	makeBatch, err := cfg.batchMaker()
	if err != nil {
		return nil, err
	}
	fs := make([]*frameSource, cfg.Sources)
	for i := range fs {
		f, err := openFrames(ctx, cfg, fmt.Sprintf("%s-%d", cfg.SourcePrefix, i), func(j int) []codec.Entry { return makeBatch(i, int64(j)) })
		if err != nil {
			for _, f := range fs[:i] {
				f.abort()
			}
			return nil, fmt.Errorf("bench: %w", err)
		}
		fs[i] = f
	}
	start := time.Now()
	// interval is one source's time between batches in an open loop;
	// sources are spread over it.
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.BatchSize) * float64(cfg.Sources) / cfg.Rate)
	}
	limit := cfg.batchesPerSource()
	var stop time.Time
	if cfg.Duration > 0 {
		stop = start.Add(cfg.Duration)
	}
	var errs errorList
	var wg sync.WaitGroup
	for i, f := range fs {
		f.start = start.Add(interval * time.Duration(i) / time.Duration(cfg.Sources))
		f.interval = interval
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.run(ctx, stop, limit, cfg.MaxPending); err != nil {
				errs.add(err)
			}
		}()
	}
	stopProgress := startProgress(cfg, start, "frames ", framesProgress(fs))
	// A stream blocked in Send (a server that stopped reading) sees no
	// deadline: once no ack has come for the grace period, the streams get
	// one more before they are cut.
	var cut *time.Timer
	stopWatch := watchStall(cfg.Grace, func() uint64 { return framesProgress(fs)().batches }, func() {
		cut = time.AfterFunc(cfg.Grace, func() {
			for _, f := range fs {
				f.cancel()
			}
		})
	})
	wg.Wait()
	stopWatch()
	if cut != nil {
		cut.Stop()
	}
	stopProgress()

	s := &Summary{Mode: "frames", Sources: cfg.Sources, BatchSize: cfg.BatchSize, TargetEntriesPerSec: cfg.Rate}
	if cfg.Rate == 0 {
		s.MaxPending = cfg.MaxPending
	}
	var ackH, persH client.Histogram
	var end, sendEnd time.Time
	var winEntries, winBytes uint64
	for _, f := range fs {
		f.mu.Lock()
		f.addTo(s)
		s.Retried += f.resent
		s.StaleNacks += f.staleNacks
		ackH.Merge(&f.ackH)
		persH.Merge(&f.persH)
		winEntries += f.winEntries
		winBytes += f.winBytes
		if n := f.next - f.acked; n > 0 {
			s.UnackedBatches += uint64(n)
			s.UnackedEntries += uint64(n) * uint64(f.pool.Entries())
		}
		if f.lastAck.After(end) {
			end = f.lastAck
		}
		if f.sendEnd.After(sendEnd) {
			sendEnd = f.sendEnd
		}
		f.mu.Unlock()
	}
	if end.IsZero() {
		end = time.Now()
	}
	if sendEnd.IsZero() {
		sendEnd = end
	}
	s.Seconds = end.Sub(start).Seconds()
	s.AckLatency = ackH.Summary()
	s.PersistedLatency = persH.Summary()
	s.window(sendEnd.Sub(start).Seconds(), winEntries, winBytes)
	s.finish(&errs)
	return s, nil
}

// sentFrame is a batch sent and not yet answered. The server answers every
// batch of a stream once, in order, so answers pop the queue's front.
type sentFrame struct {
	k     int64
	epoch int
}

// frameSource is one stream of Frames.
type frameSource struct {
	benchStream // first is the batch number of batch 0
	pool        *FramePool
	id          string
	start       time.Time
	interval    time.Duration // open loop: between scheduled sends; 0: closed loop
	grace       time.Duration // Config.Grace
	readDone    chan struct{}

	mu       sync.Mutex
	changed  *sync.Cond // an answer arrived, or the reader ended
	inFlight []sentFrame
	sched    []time.Time // by k: scheduled (open loop) or first send time
	epoch    int         // raised by each rewind; answers to older sends are stale
	rewind   int64       // batch to send again from, -1 for none
	// slow is set by a refusal and cleared by the next ack: meanwhile a
	// batch is sent only when none is in flight, so that a retry refused
	// again has no followers to be refused with it.
	slow    bool
	resume  time.Time // not before (the server's retry delay)
	acked   int64     // batches 0..acked-1 are acknowledged
	persist int64     // batches 0..persist-1 are persisted
	readErr error

	sendingDone bool  // the sending window is over
	stalled     bool  // it ended because no ack came for the grace period
	next        int64 // batches 0..next-1 were sent at least once
	sendEnd     time.Time
	streamCounts
	resent               uint64
	staleNacks           uint64 // nacks of sends behind a refused batch
	winEntries, winBytes uint64 // acknowledged by the end of the sending window
	ackH, persH          client.Histogram
	lastAck              time.Time
	frameSize            int
}

func openFrames(ctx context.Context, cfg Config, id string, makeBatch func(j int) []codec.Entry) (*frameSource, error) {
	pool, err := newFramePoolOf(id, makeBatch)
	if err != nil {
		return nil, err
	}
	bs, err := dialStream(ctx, cfg.Addr, id, cfg.DialOptions)
	if err != nil {
		return nil, err
	}
	f := &frameSource{benchStream: bs, pool: pool, id: id, grace: cfg.Grace, readDone: make(chan struct{}),
		rewind: -1, streamCounts: newStreamCounts(), frameSize: len(pool.frames[0])}
	f.changed = sync.NewCond(&f.mu)
	go f.read()
	return f, nil
}

// run sends until stop (or limit batches), then sends again what the server
// refused until every batch is acknowledged, then half-closes the stream and
// waits for the last answers (persisted watermarks included, for at most a
// minute).
func (f *frameSource) run(ctx context.Context, stop time.Time, limit int64, maxPending int) error {
	defer f.abort()
	var k, next int64 // k: batch to send; next: first batch never sent
	for {
		f.mu.Lock()
		for {
			if f.readErr != nil {
				err := f.readErr
				f.mu.Unlock()
				return fmt.Errorf("frames %s: %w", f.id, err)
			}
			if f.rewind >= 0 {
				k, f.rewind = f.rewind, -1
			}
			if !f.sendingDone && ((!stop.IsZero() && !time.Now().Before(stop)) || (limit > 0 && next >= limit) || ctx.Err() != nil) {
				f.sendingDone, f.sendEnd = true, time.Now()
				f.winEntries, f.winBytes = f.ackedEntries, f.ackedBytes
			}
			if !f.sendingDone && time.Since(later(f.lastAck, f.start)) > f.grace {
				// No answer for the grace period: stop sending, and give
				// the outstanding batches one more grace period.
				f.sendingDone, f.sendEnd = true, time.Now()
				f.winEntries, f.winBytes = f.ackedEntries, f.ackedBytes
				f.stalled = true
				continue
			}
			if k < next || !f.sendingDone {
				if f.slow {
					if len(f.inFlight) == 0 {
						break // the refused batch, alone
					}
				} else if f.interval > 0 || len(f.inFlight) < maxPending {
					break // something to send
				}
			} else if len(f.inFlight) == 0 && f.acked >= next {
				f.mu.Unlock()
				return f.finish(ctx)
			}
			if f.sendingDone && time.Since(f.sendEnd) > f.grace {
				n := next - f.acked
				f.mu.Unlock()
				err := fmt.Errorf("frames %s: %d batches not acknowledged %v (--grace) after the sending window", f.id, n, f.grace)
				if f.stalled {
					err = fmt.Errorf("frames %s: no ack for %v (--grace), then %d batches not acknowledged %v later", f.id, f.grace, n, f.grace)
				}
				return err
			}
			if ctx.Err() != nil {
				f.mu.Unlock()
				return nil
			}
			f.waitLocked(stop)
		}
		due := time.Now()
		if k == next && f.interval > 0 {
			due = f.start.Add(time.Duration(k) * f.interval)
			if !stop.IsZero() && !due.Before(stop) {
				f.sendingDone, f.sendEnd = true, time.Now()
				f.winEntries, f.winBytes = f.ackedEntries, f.ackedBytes
				f.mu.Unlock()
				continue
			}
		}
		resume := f.resume
		f.mu.Unlock()
		if wait := time.Until(later(due, resume)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		f.mu.Lock()
		if f.rewind >= 0 || (f.slow && len(f.inFlight) > 0) { // refused meanwhile: start over from there
			f.mu.Unlock()
			continue
		}
		if k == next {
			// Latency counts from the scheduled time in an open loop, from
			// the first send in a closed one; a batch sent again keeps it.
			if f.interval == 0 {
				due = time.Now()
			}
			f.sched = append(f.sched, due)
			f.sentEntries += uint64(f.pool.Entries())
			next++
			f.next = next
		} else {
			f.resent++
		}
		f.inFlight = append(f.inFlight, sentFrame{k: k, epoch: f.epoch})
		f.mu.Unlock()
		frame := f.pool.Frame(k, f.first+uint64(k), f.firstEntry)
		if err := f.stream.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
			return fmt.Errorf("frames %s: send: %w", f.id, err)
		}
		k++
	}
}

// waitLocked waits for an answer, at most until stop while the sending
// window lasts, and until the grace period after it; and never longer than
// the grace period from the last answer.
func (f *frameSource) waitLocked(stop time.Time) {
	until := later(f.lastAck, f.start).Add(f.grace + time.Millisecond)
	if !stop.IsZero() && stop.Before(until) {
		until = stop
	}
	if f.sendingDone {
		until = f.sendEnd.Add(f.grace + time.Millisecond)
	}
	t := time.AfterFunc(time.Until(until), func() {
		f.mu.Lock()
		f.changed.Broadcast()
		f.mu.Unlock()
	})
	defer t.Stop()
	f.changed.Wait()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// finish half-closes the stream and waits for the reader (the last persisted
// watermarks), at most the grace period.
func (f *frameSource) finish(ctx context.Context) error {
	if err := f.stream.CloseSend(); err != nil {
		return err
	}
	t := time.NewTimer(f.grace)
	defer t.Stop()
	select {
	case <-f.readDone:
	case <-ctx.Done():
	case <-t.C:
	}
	return nil
}

func (f *frameSource) read() {
	defer close(f.readDone)
	for {
		resp, err := f.stream.Recv()
		now := time.Now()
		f.mu.Lock()
		if err != nil {
			if !errors.Is(err, io.EOF) && len(f.inFlight) > 0 {
				f.readErr = err
			}
			f.changed.Broadcast()
			f.mu.Unlock()
			return
		}
		switch m := resp.GetKind().(type) {
		case *lakehousev1.StreamResponse_Ack:
			f.answerLocked(now, m.Ack.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, nil)
		case *lakehousev1.StreamResponse_Nack:
			f.answerLocked(now, false, m.Nack)
		case *lakehousev1.StreamResponse_Persisted:
			for w := int64(m.Persisted.GetSequenceNumber() - f.first); f.persist <= w && f.persist < f.acked; f.persist++ {
				f.persH.Record(now.Sub(f.sched[f.persist]))
			}
		}
		f.changed.Broadcast()
		f.mu.Unlock()
	}
}

// answerLocked handles the answer to the oldest batch in flight.
func (f *frameSource) answerLocked(now time.Time, dup bool, nack *lakehousev1.Nack) {
	if len(f.inFlight) == 0 {
		return
	}
	sf := f.inFlight[0]
	f.inFlight = f.inFlight[1:]
	if nack != nil {
		if sf.epoch != f.epoch || sf.k < f.acked {
			f.staleNacks++
			return // behind a refused batch: sent again after it
		}
		f.nacks[client.NackReasonName(nack.GetReason())]++
		if !nack.GetShouldRetry() {
			f.readErr = fmt.Errorf("batch %d refused: %s: %s", f.first+uint64(sf.k), client.NackReasonName(nack.GetReason()), nack.GetErrorMessage())
			return
		}
		f.epoch++
		f.rewind = sf.k
		f.slow = true
		if e := nack.GetExpectedSequence(); nack.GetReason() == lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE && e >= f.first {
			if kk := int64(e - f.first); kk >= f.acked && kk < sf.k {
				f.rewind = kk // the server lacks an earlier batch
			}
		}
		f.resume = now.Add(time.Duration(nack.GetRetryDelayMs()) * time.Millisecond)
		return
	}
	if sf.k != f.acked {
		return // an answer to a batch sent twice
	}
	f.acked++
	f.slow = false
	if dup {
		f.dups++
	}
	f.ackedBatches++
	f.ackedEntries += uint64(f.pool.Entries())
	f.ackedBytes += uint64(f.frameSize)
	f.ackH.Record(now.Sub(f.sched[sf.k]))
	f.lastAck = now
}

// framesProgress samples the frame sources for startProgress.
func framesProgress(fs []*frameSource) func() progressSample {
	return func() progressSample {
		var p progressSample
		for _, f := range fs {
			f.mu.Lock()
			p.entries += f.ackedEntries
			p.bytes += f.ackedBytes
			p.batches += f.ackedBatches
			p.pending += len(f.inFlight)
			for _, v := range f.nacks {
				p.nacks += v
			}
			f.mu.Unlock()
		}
		return p
	}
}
