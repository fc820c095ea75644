// Package e2e tests the client against the real aggregator
// (internal/servertest): exactly-once delivery across server crashes,
// backpressure nacks and fencing.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func logger() *slog.Logger {
	if os.Getenv("CLIENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func quiet(c *server.Config) { c.Logger = logger() }

func dial(t *testing.T, addr, src string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base := []client.Option{
		client.WithLogger(logger()),
		client.WithReconnect(20*time.Millisecond, 50),
		client.WithRetryBackoff(10*time.Millisecond, 2, 200*time.Millisecond),
		client.WithAckTimeout(5 * time.Second),
		client.WithBatchTimeout(50 * time.Millisecond),
	}
	c, err := client.Dial(ctx, addr, src, append(base, opts...)...)
	if err != nil {
		t.Fatalf("Dial %s: %v", src, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// checkExactlyOnce reads the sink and checks each source holds entries
// 1..n exactly once.
func checkExactlyOnce(t *testing.T, in *servertest.Instance, n map[string]uint64) {
	t.Helper()
	seen := map[string]map[uint64]int{}
	for _, r := range in.Records() {
		if seen[r.SourceID] == nil {
			seen[r.SourceID] = map[uint64]int{}
		}
		seen[r.SourceID][r.EntrySeq]++
	}
	for src, want := range n {
		got := seen[src]
		if uint64(len(got)) != want {
			t.Errorf("source %s: %d distinct entries committed, want %d", src, len(got), want)
		}
		for seq, k := range got {
			if k != 1 || seq < 1 || seq > want {
				t.Errorf("source %s: entry %d committed %d times", src, seq, k)
			}
		}
	}
}

func send(t *testing.T, c *client.Client, from, n int64) {
	t.Helper()
	if err := c.SendMany(context.Background(), workload.Entries(from, n)); err != nil {
		t.Fatalf("SendMany: %v", err)
	}
}

func TestExactlyOnceAcrossServerCrash(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	const sources, per = 3, 4000
	cs := make([]*client.Client, sources)
	want := map[string]uint64{}
	for i := range cs {
		src := fmt.Sprintf("src-%d", i)
		cs[i] = dial(t, in.Addr, src, client.WithMaxBatchEntries(500))
		want[src] = per
	}
	for _, c := range cs {
		send(t, c, 0, per/2)
	}
	// Crash with batches in flight: the log has what was acked; the rest
	// is resent under the same numbers after the reconnect.
	in.Restart()
	for _, c := range cs {
		send(t, c, per/2, per/2)
	}
	for _, c := range cs {
		if _, err := c.Flush(context.Background()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		st := c.Stats()
		if st.Reconnects == 0 || st.EntriesAcked != per {
			t.Errorf("%s: %+v", st.SourceID, st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		cancel()
	}
	in.Stop()
	checkExactlyOnce(t, in, want)
}

func TestBufferFullBackpressure(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		quiet(c)
		c.MaxBufferBytes = 1 << 20
		c.RetryDelay = 50 * time.Millisecond
	}))
	c := dial(t, in.Addr, "bf", client.WithMaxBatchEntries(1000))
	const n = 20000
	send(t, c, 0, n)
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	st := c.Stats()
	t.Logf("nacks %v, stale %d, retried %d", st.Nacks, st.StaleNacks, st.BatchesRetried)
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	checkExactlyOnce(t, in, map[string]uint64{"bf": n})
}

func TestWaitForPersistedRealServer(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	var mu sync.Mutex
	var last uint64
	c := dial(t, in.Addr, "wp", client.WithWaitForPersisted(true), client.OnPersisted(func(p client.Persisted) {
		mu.Lock()
		last = p.Sequence
		mu.Unlock()
	}))
	send(t, c, 0, 2500)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if st := c.Stats(); last != 3 || st.PersistedSequence != 3 || st.PendingBatches != 0 {
		t.Fatalf("persisted %d, stats %+v", last, st)
	}
	// Committed before Close returned, without stopping the server.
	checkExactlyOnce(t, in, map[string]uint64{"wp": 2500})
}

func TestFencingRealServer(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	c1 := dial(t, in.Addr, "fx")
	if _, err := c1.SendBatch(context.Background(), workload.Entries(0, 10)); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, in.Addr, "fx")
	a, err := c2.SendBatch(context.Background(), workload.Entries(10, 10))
	if err != nil || a.Sequence != 2 {
		t.Fatalf("successor: %+v %v", a, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c1.SendBatch(ctx, workload.Entries(20, 10))
	if !errors.Is(err, client.ErrFenced) {
		t.Fatalf("fenced client: %v", err)
	}
	_ = c1.Close(context.Background())
	if err := c2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	checkExactlyOnce(t, in, map[string]uint64{"fx": 20})
}
