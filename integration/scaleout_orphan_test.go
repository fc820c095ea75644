//go:build unix

package integration

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestScaleOutOkModeWaitsForItsInstance: an ok-mode client (it drops
// batches once acked) was acked batches by instance a that a did not
// commit, and a is killed. Those batches exist only in a's write-ahead log,
// so b must not take the source over when a's lease expires: b refuses the
// connect (the client keeps retrying), a restarts on its data directory,
// reclaims the source and commits its log, and the client resumes there.
// Every acked entry is stored exactly once and the client never hears of a
// lost batch. Before the fix, b took the source at expiry, told the client
// last_sequence 0, and a's 20 acked batches were dropped at its restart.
func TestScaleOutOkModeWaitsForItsInstance(t *testing.T) {
	so := newScaleOut(t)
	flags := []string{"--flush-interval", "1h", "--flush-age", "1h", "--orphan-wait", "5m"}
	a, addrA := so.start("a", flags...)
	_, addrB := so.start("b", flags...)

	// The client's balancer: a first, then b (pick_first).
	r := manual.NewBuilderWithScheme("orphan")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: addrA}, {Addr: addrB}}})
	var lost atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const id = "orphan-ok"
	cl, err := client.Dial(ctx, "orphan:///lakehouse", id, client.WithDialOptions(grpc.WithResolvers(r)),
		client.WithMaxBatchEntries(scaleOutBatch), client.WithReconnect(100*time.Millisecond, 1_000_000),
		client.WithMaxRetries(1_000_000), client.WithRetryBackoff(50*time.Millisecond, 2, time.Second),
		client.WithBreaker(client.BreakerConfig{OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: time.Second}),
		client.WithDeliveryTimeout(2*time.Minute),
		client.OnError(func(err error) {
			if errors.Is(err, client.ErrAckedLost) {
				lost.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close(context.Background())
	// send reports through t.Errorf: it also runs on a goroutine of its own.
	// A call the open breaker refuses accepted nothing: it is made again.
	send := func(from, to int64) {
		t.Helper()
		for b := from; b < to; b++ {
			_, err := cl.SendBatch(ctx, workload.Entries(b*scaleOutBatch, scaleOutBatch))
			for errors.Is(err, client.ErrCircuitOpen) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				_, err = cl.SendBatch(ctx, workload.Entries(b*scaleOutBatch, scaleOutBatch))
			}
			if err != nil {
				t.Errorf("batch %d: %v\n%s", b, err, so.logs("a", "b"))
				return
			}
		}
	}
	send(0, 20) // acked ok by a, not committed (the interval is an hour)
	if t.Failed() {
		return
	}
	a.kill()
	r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addrB}}})

	// b refuses the source while a's log holds its acked batches.
	done := make(chan struct{})
	go func() {
		defer close(done)
		send(20, 30)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(so.logs("b"), "source waits for its previous instance") {
		if time.Now().After(deadline) {
			t.Fatalf("b never refused the source for a's sake\n%s", so.logs("a", "b"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // several refused connects
	select {
	case <-done:
		t.Fatalf("batches 20..29 were acked while a, which holds 0..19, was down\n%s", so.logs("a", "b"))
	default:
	}

	// a comes back on its data directory and address.
	a = startProcEnv(t, so.env, addrA, filepath.Join(so.dir, "a.log"), a.args...)
	r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addrA}, {Addr: addrB}}})
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("the client did not resume after a returned\n%s", so.logs("a", "b"))
	}
	if t.Failed() {
		return
	}
	if err := cl.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := lost.Load(); n != 0 {
		t.Errorf("the client was told %d times that acked batches were lost", n)
	}
	if r := flushRPC(t, addrA); !r.GetSuccess() {
		t.Fatalf("flush on a: %+v", r)
	}
	stored := so.read()
	seen := make(map[uint64]int)
	for _, e := range stored {
		if e.source == id {
			seen[e.entry]++
		}
	}
	var missing, dup int
	for seq := uint64(1); seq <= 30*scaleOutBatch; seq++ {
		switch n := seen[seq]; {
		case n == 0:
			missing++
		case n > 1:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(seen) != 30*scaleOutBatch {
		t.Errorf("stored %d distinct entries (want %d): %d missing, %d duplicated\n%s", len(seen), 30*scaleOutBatch,
			missing, dup, so.logs("a", "b"))
	}
}
