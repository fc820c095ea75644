//go:build unix

package integration

import (
	"context"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestNativeSourceRidesOutTheBreaker: a Go-client source whose server is
// down long enough for the client's circuit breaker to open keeps offering
// its batches, and delivers every one once the server is back. SendMany
// fails fast while the breaker is open and accepts nothing (client/doc.go),
// as a producer must expect; the harness once took that for a failure and
// stopped the source, and TestScaleOutThree then waited for an ok-mode
// source (refused while it waited for its previous instance) until its
// deadline.
func TestNativeSourceRidesOutTheBreaker(t *testing.T) {
	in := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A window above the batch count: SendMany never blocks for room, so
	// calls keep arriving while the breaker is open.
	cfg := loadConfig{prefix: "breaker", native: 1, batchSize: 10, batches: 60, window: 64, rate: 20,
		ackTimeout: 3 * time.Second}
	l, err := startLoad(ctx, cfg, in.Addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	src := l.native[0]
	for src.acked.Load() == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	in.Crash()
	for src.breakerRejections.Load() == 0 {
		if l.failed() || ctx.Err() != nil {
			t.Fatalf("the source stopped instead of waiting for the breaker:\n%s", l.state())
		}
		if src.next.Load() == int64(cfg.batches) {
			t.Fatalf("every batch was handed over before the breaker opened: the run is too short to test it:\n%s", l.state())
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.Restart()
	if err := l.wait(ctx); err != nil {
		t.Fatal(err)
	}
	total := cfg.batches * cfg.batchSize
	if got := src.acked.Load(); got != int64(total) {
		t.Fatalf("acked %d entries, want %d", got, total)
	}
	l.close()
	in.Stop()
	seen := make(map[uint64]int)
	for _, r := range in.Records() {
		seen[r.EntrySeq]++
	}
	for seq := uint64(1); seq <= uint64(total); seq++ {
		if seen[seq] != 1 {
			t.Errorf("entry %d stored %d times", seq, seen[seq])
		}
	}
}
