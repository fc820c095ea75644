package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEntries returns n small entries with sequences start+1..start+n.
func testEntries(start, n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		s := start + i + 1
		out[i] = Entry{
			Sequence:  uint64(s),
			Timestamp: uint64(1700000000000 + s),
			Op:        codec.OpInsert,
			Table:     []byte("users"),
			RowID:     []byte("row-" + strconv.Itoa(s)),
			After:     []byte(`{"id":` + strconv.Itoa(s) + `}`),
		}
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if os.Getenv("CLIENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fastOpts are test-friendly timings.
func fastOpts(t testing.TB) []Option {
	t.Helper()
	return []Option{
		WithBatchTimeout(50 * time.Millisecond),
		WithRetryBackoff(10*time.Millisecond, 2, 200*time.Millisecond),
		WithReconnect(20*time.Millisecond, 20),
		WithAckTimeout(2 * time.Second),
		WithLogger(testLogger(t)),
	}
}

// dialTest dials addr with fast options plus opts.
func dialTest(t testing.TB, addr, src string, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, src, append(fastOpts(t), opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func closeTest(t testing.TB, c *Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Close(ctx)
}

// wantRange checks got is exactly from..to, each once, in order.
func wantRange(t testing.TB, what string, got []uint64, from, to uint64) {
	t.Helper()
	want := int(to - from + 1)
	if from > to {
		want = 0
	}
	if len(got) != want {
		t.Fatalf("%s: got %d values, want %d (%d..%d); first %v", what, len(got), want, from, to, head(got))
	}
	for i, v := range got {
		if v != from+uint64(i) {
			t.Fatalf("%s: value %d is %d, want %d", what, i, v, from+uint64(i))
		}
	}
}

func head(s []uint64) []uint64 {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

func TestSendAndClose(t *testing.T) {
	for _, mode := range []Mode{ModeBinary, ModeStructured} {
		t.Run(mode.String(), func(t *testing.T) {
			f := startFake(t)
			c := dialTest(t, f.Addr(), "src", WithMode(mode), WithMaxBatchEntries(100))
			if err := c.SendMany(context.Background(), testEntries(0, 250)); err != nil {
				t.Fatal(err)
			}
			if err := closeTest(t, c); err != nil {
				t.Fatalf("Close: %v", err)
			}
			wantRange(t, "entries", f.entrySeqs("src"), 1, 250)
			wantRange(t, "batches", f.batchSeqs("src"), 1, 3)
			st := c.Stats()
			if st.BatchesAcked != 3 || st.EntriesAcked != 250 || st.PendingBatches != 0 || st.State != StateClosed {
				t.Fatalf("stats: %+v", st)
			}
			if st.AckLatency.Count != 3 {
				t.Fatalf("ack latency count %d", st.AckLatency.Count)
			}
			f.mu.Lock()
			structured := f.structured
			f.mu.Unlock()
			if (mode == ModeStructured) != (structured > 0) {
				t.Fatalf("mode %s: %d structured batches", mode, structured)
			}
		})
	}
}

func TestBatchTimeoutSendsPartialBatch(t *testing.T) {
	f := startFake(t)
	clk := newFakeClock()
	var acks atomic.Int32
	c := dialTest(t, f.Addr(), "src", WithClock(clk), WithBatchTimeout(50*time.Millisecond), OnAck(func(Ack) { acks.Add(1) }))
	if err := c.Send(context.Background(), testEntries(0, 1)[0]); err != nil {
		t.Fatal(err)
	}
	clk.Advance(49 * time.Millisecond)
	if waitWall(20*time.Millisecond, func() bool { return c.Stats().BatchesSent > 0 }) {
		t.Fatal("partial batch sent before the batch timeout")
	}
	clk.Advance(time.Millisecond)
	if !waitWall(5*time.Second, func() bool { return acks.Load() == 1 }) {
		t.Fatalf("no ack after the batch timeout")
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 1)
}

func TestSendBatchReturnsAckAndResumesNumbering(t *testing.T) {
	f := startFake(t)
	f.last["src"] = 41 // the server already has 41 batches of this source
	c := dialTest(t, f.Addr(), "src")
	for i, want := range []uint64{42, 43} {
		a, err := c.SendBatch(context.Background(), testEntries(i*10, 10))
		if err != nil {
			t.Fatal(err)
		}
		if a.Sequence != want || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.Entries != 10 || a.Attempts != 1 {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "batches", f.batchSeqs("src"), 42, 43)
}

// TestNacks scripts one nack of each reason for batch 2 and checks that
// every entry arrives exactly once (or, for INVALID_FORMAT, that the batch is
// reported with its entries and the rest arrives).
func TestNacks(t *testing.T) {
	const per, batches = 50, 5
	cases := []struct {
		name      string
		act       action
		minDelay  time.Duration
		wantErr   bool
		reconnect bool
	}{
		{name: "buffer_full waits the delay", act: action{nack: lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, delayMs: 300}, minDelay: 300 * time.Millisecond},
		{name: "rate_limited waits the delay", act: action{nack: lakehousev1.NackReason_NACK_REASON_RATE_LIMITED, delayMs: 150}, minDelay: 150 * time.Millisecond},
		{name: "internal_error retries", act: action{nack: lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR}},
		{name: "invalid_sequence resends from expected", act: action{nack: lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, expected: 2}},
		{name: "shutting_down reconnects", act: action{nack: lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN}, reconnect: true},
		{name: "invalid_format gives up", act: action{nack: lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			clk := newFakeClock()
			var nackedAt, resentAt atomic.Int64 // on the fake clock
			f.setHook(func(_ string, _ uint64, first uint64, n int) action {
				// The batch holding entries per+1..2*per, on its first receipt.
				if first == per+1 && n == 1 {
					nackedAt.Store(clk.Now().UnixNano())
					return tc.act
				}
				if first == per+1 && n == 2 {
					resentAt.Store(clk.Now().UnixNano())
				}
				return action{}
			})
			var mu sync.Mutex
			var reported []error
			var nacks []Nack
			c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(per), WithClock(clk), WithAckTimeout(time.Minute),
				OnError(func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }),
				OnNack(func(n Nack) { mu.Lock(); nacks = append(nacks, n); mu.Unlock() }))
			stop := drive(clk, 5*time.Millisecond)
			if err := c.SendMany(context.Background(), testEntries(0, per*batches)); err != nil {
				t.Fatal(err)
			}
			err := closeTest(t, c)
			stop()
			if tc.minDelay > 0 {
				// The nacked batch must not be resent before the delay.
				if d := time.Duration(resentAt.Load() - nackedAt.Load()); d < tc.minDelay {
					t.Fatalf("resent %s after the nack, before the retry delay %s", d, tc.minDelay)
				}
			}
			st := c.Stats()
			if st.Nacks[NackReasonName(tc.act.nack)] != 1 {
				t.Fatalf("nacks %v, want one %s", st.Nacks, tc.act.nack)
			}
			if tc.wantErr {
				var be *BatchError
				if !errors.As(err, &be) || be.Seq != 2 || len(be.Entries) != per || be.Entries[0].Sequence != per+1 ||
					be.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || !errors.Is(err, ErrGaveUp) {
					t.Fatalf("Close: %v, want a BatchError for batch 2", err)
				}
				mu.Lock()
				n := len(reported)
				mu.Unlock()
				if n != 1 {
					t.Fatalf("OnError called %d times", n)
				}
				got := f.entrySeqs("src")
				wantRange(t, "entries before", got[:per], 1, per)
				wantRange(t, "entries after", got[per:], 2*per+1, per*batches)
				wantRange(t, "batches", f.batchSeqs("src"), 1, batches-1)
				return
			}
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
			wantRange(t, "entries", f.entrySeqs("src"), 1, per*batches)
			wantRange(t, "batches", f.batchSeqs("src"), 1, batches)
			if st.BatchesRetried == 0 {
				t.Fatalf("no retransmission: %+v", st)
			}
			if connects, _, _ := f.counts(); tc.reconnect != (connects > 1) {
				t.Fatalf("%d connects", connects)
			}
		})
	}
}

// TestPipelinedNacksAreStale: after BUFFER_FULL on batch 2, the batches
// already in flight behind it get INVALID_SEQUENCE; the client ignores those
// (stale) and resends from 2 once.
func TestPipelinedNacksAreStale(t *testing.T) {
	f := startFake(t)
	release := make(chan struct{})
	f.setHook(func(_ string, seq uint64, _ uint64, n int) action {
		if seq == 2 && n == 1 {
			return action{nack: lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, delayMs: 50}
		}
		if seq == 1 {
			<-release // hold batch 1 so that 2..5 are sent before the nack
		}
		return action{}
	})
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10))
	if err := c.SendMany(context.Background(), testEntries(0, 50)); err != nil {
		t.Fatal(err)
	}
	// Batch 1 is held at the server until all five are on the wire.
	if !waitWall(5*time.Second, func() bool { return c.Stats().BatchesSent == 5 }) {
		t.Fatalf("stats %+v", c.Stats())
	}
	close(release)
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 50)
	st := c.Stats()
	if st.StaleNacks == 0 || st.Nacks["invalid_sequence"] != 0 {
		t.Fatalf("stale %d, nacks %v", st.StaleNacks, st.Nacks)
	}
}

func TestRetriesExhaustedReportsBatch(t *testing.T) {
	f := startFake(t)
	f.setHook(func(_ string, _ uint64, first uint64, _ int) action {
		if first == 11 {
			return action{nack: lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR}
		}
		return action{}
	})
	var reported atomic.Int32
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithMaxRetries(3),
		OnError(func(error) { reported.Add(1) }))
	if err := c.SendMany(context.Background(), testEntries(0, 30)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Flush(context.Background())
	var be *BatchError
	if !errors.As(err, &be) || be.Attempts != 4 || len(be.Entries) != 10 || be.Entries[0].Sequence != 11 {
		t.Fatalf("Flush: %v (%+v)", err, be)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatalf("Close after Flush returned the error: %v", err)
	}
	if reported.Load() != 1 {
		t.Fatalf("OnError %d times", reported.Load())
	}
	got := f.entrySeqs("src")
	wantRange(t, "first", got[:10], 1, 10)
	wantRange(t, "rest", got[10:], 21, 30)
	wantRange(t, "batches", f.batchSeqs("src"), 1, 2)
}

// TestFaults injects connection faults and checks exactly-once delivery.
func TestFaults(t *testing.T) {
	const per, batches = 20, 8
	cases := []struct {
		name   string
		hook   func(seq uint64, n int) action
		during func(f *fakeServer)
	}{
		{name: "cut before store", hook: func(seq uint64, n int) action { return action{cut: seq == 3 && n == 1} }},
		{name: "cut after store", hook: func(seq uint64, n int) action { return action{cutAfter: seq == 3 && n == 1} }},
		{name: "dropped ack", hook: func(seq uint64, n int) action { return action{drop: seq == 4 && n == 1} }},
		{name: "server restart", during: func(f *fakeServer) { f.restart(200 * time.Millisecond) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			if tc.hook != nil {
				f.setHook(func(_ string, seq, _ uint64, n int) action { return tc.hook(seq, n) })
			}
			c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(per), WithAckTimeout(300*time.Millisecond))
			ctx := context.Background()
			if err := c.SendMany(ctx, testEntries(0, per*batches/2)); err != nil {
				t.Fatal(err)
			}
			if tc.during != nil {
				if _, err := c.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				tc.during(f)
			}
			if err := c.SendMany(ctx, testEntries(per*batches/2, per*batches/2)); err != nil {
				t.Fatal(err)
			}
			if err := closeTest(t, c); err != nil {
				t.Fatalf("Close: %v", err)
			}
			wantRange(t, "entries", f.entrySeqs("src"), 1, per*batches)
			wantRange(t, "batches", f.batchSeqs("src"), 1, batches)
			if st := c.Stats(); st.Reconnects == 0 {
				t.Fatalf("no reconnect: %+v", st)
			}
		})
	}
}

func TestBackpressureBlocksSend(t *testing.T) {
	f := startFake(t)
	f.hold = make(chan struct{})
	hold := f.hold
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithMaxPendingBatches(2))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.SendMany(ctx, testEntries(0, 40))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("SendMany: %v after %s, want a deadline error after blocking", err, time.Since(start))
	}
	// Two batches pending plus one full current batch; the 31st entry blocked.
	st := c.Stats()
	if st.PendingBatches != 2 || st.BufferedEntries != 10 {
		t.Fatalf("pending %d batches, %d buffered", st.PendingBatches, st.BufferedEntries)
	}
	f.mu.Lock()
	f.hold = nil
	f.mu.Unlock()
	close(hold)
	if err := c.SendMany(context.Background(), testEntries(30, 10)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 40)
}

func TestCloseWaitsForAcks(t *testing.T) {
	f := startFake(t)
	f.hold = make(chan struct{})
	hold := f.hold
	var acked atomic.Int32
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), OnAck(func(Ack) { acked.Add(1) }))
	if err := c.SendMany(context.Background(), testEntries(0, 35)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- closeTest(t, c) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned before the acks: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	f.mu.Lock()
	f.hold = nil
	f.mu.Unlock()
	close(hold)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if acked.Load() != 4 {
		t.Fatalf("Close returned with %d acks", acked.Load())
	}
	if st := c.Stats(); st.PendingBatches != 0 || st.BatchesAcked != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseTimeoutReportsPendingBatches(t *testing.T) {
	f := startFake(t)
	f.setHook(func(_ string, _, _ uint64, _ int) action { return action{drop: true} })
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10))
	if err := c.SendMany(context.Background(), testEntries(0, 20)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.Close(ctx)
	var n int
	for _, e := range unwrapAll(err) {
		var be *BatchError
		if errors.As(e, &be) {
			n += len(be.Entries)
		}
	}
	if n != 20 || !errors.Is(err, ErrClosed) {
		t.Fatalf("Close: %v; %d entries reported", err, n)
	}
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func TestWaitForPersisted(t *testing.T) {
	f := startFake(t)
	var persisted atomic.Uint64
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithWaitForPersisted(true),
		OnPersisted(func(p Persisted) { persisted.Store(p.Sequence) }))
	a, err := c.SendBatch(context.Background(), testEntries(0, 5))
	if err != nil || a.Sequence != 1 {
		t.Fatalf("SendBatch: %v %+v", err, a)
	}
	if st := c.Stats(); st.PendingBatches != 1 {
		t.Fatalf("acked batch not kept until persisted: %+v", st)
	}
	if err := c.SendMany(context.Background(), testEntries(5, 15)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if persisted.Load() != 3 || st.PersistedSequence != 3 || st.PendingBatches != 0 || st.PersistedLatency.Count != 3 {
		t.Fatalf("persisted %d, stats %+v", persisted.Load(), st)
	}
	if _, _, flushes := f.counts(); flushes == 0 {
		t.Fatal("Close did not ask the server to flush")
	}
}

func TestFlushRPC(t *testing.T) {
	f := startFake(t)
	c := dialTest(t, f.Addr(), "src")
	if err := c.SendMany(context.Background(), testEntries(0, 5)); err != nil {
		t.Fatal(err)
	}
	res, err := c.Flush(context.Background())
	if err != nil || !res.GetSuccess() || res.GetBatchesFlushed() != 1 {
		t.Fatalf("Flush: %v %v", res, err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 5)
}

func TestHeartbeats(t *testing.T) {
	f := startFake(t)
	clk := newFakeClock()
	c := dialTest(t, f.Addr(), "src", WithClock(clk), WithHeartbeatInterval(20*time.Millisecond))
	heartbeats := func() int { _, hb, _ := f.counts(); return hb }
	advanceUntil(t, clk, 20*time.Millisecond, func() bool { return heartbeats() >= 3 })
	if !waitWall(5*time.Second, func() bool { return c.Stats().Pongs >= 3 }) {
		t.Fatalf("stats %+v", c.Stats())
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
}

// TestTimestampsFromClock: batch and heartbeat timestamps come from the
// injected clock, like every other time reading of the client.
func TestTimestampsFromClock(t *testing.T) {
	for _, mode := range []Mode{ModeBinary, ModeStructured} {
		t.Run(mode.String(), func(t *testing.T) {
			f := startFake(t)
			clk := newFakeClock()
			c := dialTest(t, f.Addr(), "src", WithClock(clk), WithMode(mode), WithHeartbeatInterval(time.Second))
			sealed := clk.Now().UnixMilli()
			if _, err := c.SendBatch(context.Background(), testEntries(0, 3)); err != nil {
				t.Fatal(err)
			}
			advanceUntil(t, clk, time.Second, func() bool { _, hb, _ := f.counts(); return hb >= 1 })
			f.mu.Lock()
			batchTS, hbTS := f.batchTS, f.hbTS
			f.mu.Unlock()
			if len(batchTS) != 1 || batchTS[0] != sealed {
				t.Fatalf("batch timestamps %v, want [%d]", batchTS, sealed)
			}
			if hbTS[0] <= sealed || hbTS[0] > clk.Now().UnixMilli() {
				t.Fatalf("heartbeat timestamp %d, want in (%d, %d]", hbTS[0], sealed, clk.Now().UnixMilli())
			}
		})
	}
}

func TestPanickingCallbacks(t *testing.T) {
	f := startFake(t)
	f.setHook(func(_ string, seq, _ uint64, n int) action {
		if seq == 1 && n == 1 {
			return action{nack: lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR}
		}
		return action{}
	})
	boom := func() { panic("boom") }
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10),
		OnAck(func(Ack) { boom() }), OnNack(func(Nack) { boom() }),
		OnStateChange(func(StateChange) { boom() }), OnPersisted(func(Persisted) { boom() }),
		WithBreaker(BreakerConfig{OnStateChange: func(_, _ BreakerState) { boom() }}))
	for i := range 3 {
		if _, err := c.SendBatch(context.Background(), testEntries(i*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 30)
}

func TestBreakerOpensAndRejectsSend(t *testing.T) {
	f := startFake(t)
	var failing atomic.Bool
	failing.Store(true)
	f.setHook(func(_ string, _, _ uint64, _ int) action {
		if failing.Load() {
			return action{nack: lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR}
		}
		return action{}
	})
	var changes []string
	var mu sync.Mutex
	clk := newFakeClock()
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithMaxRetries(100), WithClock(clk), WithAckTimeout(time.Minute),
		WithRetryBackoff(time.Millisecond, 1, time.Millisecond),
		WithBreaker(BreakerConfig{OpenTimeout: 200 * time.Millisecond, OnStateChange: func(from, to BreakerState) {
			mu.Lock()
			changes = append(changes, from.String()+">"+to.String())
			mu.Unlock()
		}}))
	if err := c.SendMany(context.Background(), testEntries(0, 10)); err != nil {
		t.Fatal(err)
	}
	// The clock stops once the breaker is open: it stays open.
	advanceUntil(t, clk, time.Millisecond, func() bool { return c.Breaker().State() == BreakerOpen })
	err := c.Send(context.Background(), testEntries(10, 1)[0])
	if !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("Send with the breaker open: %v", err)
	}
	failing.Store(false)
	stop := drive(clk, 5*time.Millisecond)
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	stop()
	wantRange(t, "entries", f.entrySeqs("src"), 1, 10)
	st := c.Stats().Breaker
	mu.Lock()
	defer mu.Unlock()
	if st.State != BreakerClosed || st.Rejections == 0 || st.Opens == 0 || fmt.Sprint(changes[:3]) != "[closed>open open>half-open half-open>closed]" &&
		fmt.Sprint(changes[:3]) != "[closed>open open>half-open half-open>open]" {
		t.Fatalf("breaker %+v, changes %v", st, changes)
	}
}

func TestFencedClientFails(t *testing.T) {
	f := startFake(t)
	var failed atomic.Bool
	c1 := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), OnError(func(err error) {
		if errors.Is(err, ErrFenced) {
			failed.Store(true)
		}
	}))
	if _, err := c1.SendBatch(context.Background(), testEntries(0, 10)); err != nil {
		t.Fatal(err)
	}
	c2 := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10))
	// c1's next batch is refused with Aborted: it fails for good and
	// reports the batch instead of fighting c2 for the source.
	_, err := c1.SendBatch(context.Background(), testEntries(10, 10))
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, ErrFenced) || len(be.Entries) != 10 {
		t.Fatalf("SendBatch on a fenced client: %v", err)
	}
	// OnError runs right after the failure is recorded, possibly just after
	// SendBatch returned.
	for deadline := time.Now().Add(time.Second); !failed.Load() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if !failed.Load() || c1.Stats().State != StateFailed {
		t.Fatalf("fenced client state %s", c1.Stats().State)
	}
	if a, err := c2.SendBatch(context.Background(), testEntries(10, 10)); err != nil || a.Sequence != 2 {
		t.Fatalf("successor: %+v %v", a, err)
	}
	_ = closeTest(t, c1)
	if err := closeTest(t, c2); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 20)
}

func TestDialFailsWhenServerDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, "127.0.0.1:1", "src", fastOpts(t)...)
	if err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

func TestReconnectAttemptsExhausted(t *testing.T) {
	f := startFake(t)
	c := dialTest(t, f.Addr(), "src", WithReconnect(10*time.Millisecond, 3), WithMaxBatchEntries(10))
	f.stop()
	_, err := c.SendBatch(context.Background(), testEntries(0, 10))
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("SendBatch with the server gone: %v", err)
	}
	if err := c.Send(context.Background(), testEntries(10, 1)[0]); !errors.Is(err, ErrFailed) {
		t.Fatalf("Send on a failed client: %v", err)
	}
	if err := closeTest(t, c); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close: %v", err)
	}
}

// TestCloseDoesNotWaitForReconnectDelay: Close of a client waiting to
// reconnect returns at once, not after the reconnect delay.
func TestCloseDoesNotWaitForReconnectDelay(t *testing.T) {
	f := startFake(t)
	clk := newFakeClock() // stopped: the reconnect delay never ends by itself
	c := dialTest(t, f.Addr(), "src", WithClock(clk))
	f.stop()
	if !waitWall(5*time.Second, func() bool { return c.Stats().State == StateReconnecting }) {
		t.Fatalf("state %s", c.Stats().State)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Close took %s", el)
	}
}

func TestNoGoroutineLeakAfterClose(t *testing.T) {
	f := startFake(t)
	opt := goleak.IgnoreCurrent()
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithHeartbeatInterval(10*time.Millisecond))
	if err := c.SendMany(context.Background(), testEntries(0, 95)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, opt)
}

// TestAckTimeoutsExhaustRetries: a batch the server never answers nor
// stores is resent after each ack timeout (with a reconnect), then reported
// with its entries; the batches after it are renumbered and delivered.
func TestAckTimeoutsExhaustRetries(t *testing.T) {
	f := startFake(t)
	f.setHook(func(_ string, _ uint64, first uint64, _ int) action { return action{ignore: first == 11} })
	clk := newFakeClock()
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10), WithMaxRetries(2), WithAckTimeout(100*time.Millisecond), WithClock(clk))
	if err := c.SendMany(context.Background(), testEntries(0, 30)); err != nil {
		t.Fatal(err)
	}
	stop := drive(clk, time.Millisecond)
	err := closeTest(t, c)
	stop()
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, ErrAckTimeout) || be.Entries[0].Sequence != 11 || be.Attempts != 3 {
		t.Fatalf("Close: %v", err)
	}
	got := f.entrySeqs("src")
	wantRange(t, "first", got[:10], 1, 10)
	wantRange(t, "rest", got[10:], 21, 30)
	wantRange(t, "batches", f.batchSeqs("src"), 1, 2)
}

// TestServerLostAckedBatches: a server that comes back without batches it
// acknowledged (its log was lost, or the source moved while the instance
// that acked them was down) gets the next batches numbered after what it
// has, instead of a stream stuck on INVALID_SEQUENCE; and the loss is
// reported (OnError, Stats, Close), never silent.
func TestServerLostAckedBatches(t *testing.T) {
	f := startFake(t)
	var mu sync.Mutex
	var reported []error
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10),
		OnError(func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }))
	if err := c.SendMany(context.Background(), testEntries(0, 30)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.stop()
	f.forget("src", 1)
	f.listen(f.Addr())
	a, err := c.SendBatch(context.Background(), testEntries(30, 10))
	if err != nil || a.Sequence != 2 {
		t.Fatalf("after the server lost batches 2-3: %+v %v", a, err)
	}
	if st := c.Stats(); st.BatchesLost != 2 {
		t.Fatalf("BatchesLost %d, want 2", st.BatchesLost)
	}
	err = closeTest(t, c)
	var le *LostError
	if !errors.As(err, &le) || le.FromSeq != 2 || le.ToSeq != 3 || !errors.Is(err, ErrAckedLost) {
		t.Fatalf("Close: %v, want a LostError for batches 2-3", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || !errors.Is(reported[0], ErrAckedLost) {
		t.Fatalf("OnError got %v, want the loss once", reported)
	}
	wantRange(t, "batches", f.batchSeqs("src"), 1, 2)
}

// TestBufferedAckSlowsDown: while the server acks BUFFERED, the client keeps
// one batch in flight; once it acks OK again, the client pipelines again.
func TestBufferedAckSlowsDown(t *testing.T) {
	f := startFake(t)
	f.ackStatus = lakehousev1.AckStatus_ACK_STATUS_BUFFERED
	f.ackDelay = 10 * time.Millisecond
	c := dialTest(t, f.Addr(), "src", WithMaxBatchEntries(10))
	maxInflight := func(d time.Duration) int {
		t.Helper()
		m := 0
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
			c.mu.Lock()
			m = max(m, c.q.sent())
			c.mu.Unlock()
		}
		return m
	}
	if _, err := c.SendBatch(context.Background(), testEntries(0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMany(context.Background(), testEntries(10, 100)); err != nil {
		t.Fatal(err)
	}
	if m := maxInflight(60 * time.Millisecond); m != 1 {
		t.Fatalf("%d batches in flight while the server says BUFFERED", m)
	}
	f.mu.Lock()
	f.ackStatus = lakehousev1.AckStatus_ACK_STATUS_OK
	f.mu.Unlock()
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMany(context.Background(), testEntries(110, 100)); err != nil {
		t.Fatal(err)
	}
	if m := maxInflight(50 * time.Millisecond); m < 2 {
		t.Fatalf("only %d batch in flight after OK acks", m)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	wantRange(t, "entries", f.entrySeqs("src"), 1, 210)
}
