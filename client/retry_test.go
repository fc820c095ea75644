package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.FailedPrecondition, "connect may only be the first message"), true},
		{fmt.Errorf("client: waiting for connected: %w", status.Error(codes.InvalidArgument, "x")), true},
		{status.Error(codes.PermissionDenied, "x"), true},
		{status.Error(codes.Unauthenticated, "x"), true},
		{status.Error(codes.Unimplemented, "x"), true},
		{streamErr(status.Error(codes.Aborted, "fenced"), nil), true},
		{status.Error(codes.Unavailable, "x"), false},
		{status.Error(codes.Internal, "x"), false},
		{status.Error(codes.ResourceExhausted, "x"), false},
		{streamErr(nil, nil), false}, // the server ended the stream
		{fmt.Errorf("%w: batch 3", ErrAckTimeout), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestPermanentStatusNotRetried: a stream refused with a permanent code
// fails the client at once; a transient one is retried.
func TestPermanentStatusNotRetried(t *testing.T) {
	for _, code := range []codes.Code{codes.FailedPrecondition, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated} {
		t.Run(code.String(), func(t *testing.T) {
			f := startFake(t)
			f.refuse = status.Error(code, "scripted refusal")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := Dial(ctx, f.Addr(), "src", fastOpts(t)...)
			if !errors.Is(err, ErrFailed) || status.Code(err) != code {
				t.Fatalf("Dial: %v, want a failure with %s", err, code)
			}
			if connects, _, _ := f.counts(); connects != 1 {
				t.Fatalf("%d connects for a permanent error", connects)
			}
		})
	}
	t.Run("Unavailable is retried", func(t *testing.T) {
		f := startFake(t)
		f.refuse = status.Error(codes.Unavailable, "scripted refusal")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := Dial(ctx, f.Addr(), "src", append(fastOpts(t), WithReconnect(time.Millisecond, 3))...)
		if !errors.Is(err, ErrFailed) || status.Code(err) != codes.Unavailable {
			t.Fatalf("Dial: %v", err)
		}
		if connects, _, _ := f.counts(); connects != 4 {
			t.Fatalf("%d connects, want 1 + 3 reconnect attempts", connects)
		}
	})
}

// TestBackpressureBacksOff: BUFFER_FULL nacks without a retry delay are
// retried after a growing backoff (10, 20, 40 ms with the test options),
// without counting against the retries.
func TestBackpressureBacksOff(t *testing.T) {
	at := resendTimes(t, lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, 4, 1)
	wantDoublingBackoff(t, at)
}

// resendTimes sends one batch that the server nacks with reason nacks
// times, then takes, with the client's retries set to maxRetries; it checks
// the batch is delivered after nacks+1 transmissions and returns their
// times on the client's (fake) clock.
func resendTimes(t *testing.T, reason lakehousev1.NackReason, nacks, maxRetries int) []time.Time {
	t.Helper()
	f := startFake(t)
	clk := newFakeClock()
	var mu sync.Mutex
	var at []time.Time
	f.setHook(func(_ string, seq uint64, _ uint64, n int) action {
		if seq != 1 {
			return action{}
		}
		mu.Lock()
		at = append(at, clk.Now())
		mu.Unlock()
		if n <= nacks {
			return action{nack: reason}
		}
		return action{}
	})
	c := dialTest(t, f.Addr(), "src", WithClock(clk), WithAckTimeout(time.Minute), WithMaxRetries(maxRetries))
	stop := drive(clk, time.Millisecond)
	defer stop()
	a, err := c.SendBatch(context.Background(), testEntries(0, 10))
	if err != nil || a.Attempts != nacks+1 {
		t.Fatalf("SendBatch: %+v %v", a, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != nacks+1 {
		t.Fatalf("%d transmissions, want %d", len(at), nacks+1)
	}
	return append([]time.Time(nil), at...)
}

// wantDoublingBackoff checks each resend waited at least 10 ms, doubling.
func wantDoublingBackoff(t *testing.T, at []time.Time) {
	t.Helper()
	for i := 1; i < len(at); i++ {
		want := 10 * time.Millisecond << (i - 1)
		if d := at[i].Sub(at[i-1]); d < want {
			t.Fatalf("resend %d after %s, want at least %s", i, d, want)
		}
	}
}

// TestDeliveryTimeout: a batch the server keeps refusing with BUFFER_FULL
// is given up on after the delivery timeout and reported with its entries;
// the next batch takes its number and is delivered.
func TestDeliveryTimeout(t *testing.T) {
	f := startFake(t)
	clk := newFakeClock()
	f.setHook(func(_ string, _ uint64, first uint64, _ int) action {
		if first == 11 {
			return action{nack: lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, delayMs: 50}
		}
		return action{}
	})
	var reported []error
	var mu sync.Mutex
	c := dialTest(t, f.Addr(), "src", WithClock(clk), WithAckTimeout(time.Minute), WithMaxBatchEntries(10),
		WithDeliveryTimeout(time.Second), OnError(func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }))
	if err := c.SendMany(context.Background(), testEntries(0, 20)); err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	stop := drive(clk, 5*time.Millisecond)
	defer stop()
	_, err := c.Flush(context.Background())
	var be *BatchError
	if !errors.As(err, &be) || !errors.Is(err, ErrDeliveryTimeout) || len(be.Entries) != 10 || be.Entries[0].Sequence != 11 ||
		be.Reason != lakehousev1.NackReason_NACK_REASON_BUFFER_FULL || be.Attempts < 2 {
		t.Fatalf("Flush: %v", err)
	}
	if el := clk.Now().Sub(start); el < time.Second {
		t.Fatalf("gave up after %s, before the delivery timeout", el)
	}
	if err := c.SendMany(context.Background(), testEntries(20, 10)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatal(err)
	}
	got := f.entrySeqs("src")
	wantRange(t, "first", got[:10], 1, 10)
	wantRange(t, "rest", got[10:], 21, 30)
	wantRange(t, "batches", f.batchSeqs("src"), 1, 2)
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 {
		t.Fatalf("OnError %d times", len(reported))
	}
}

// TestInternalErrorBacksOff: a batch nacked INTERNAL_ERROR (retryable, no
// retry delay) is resent after a backoff that doubles with each failure (10,
// 20, 40 ms with the test options), not in a tight loop, and delivered once
// the server takes it.
func TestInternalErrorBacksOff(t *testing.T) {
	at := resendTimes(t, lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR, 3, 3)
	wantDoublingBackoff(t, at)
}
