package wsbridge

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
)

// The legacy child simulator lives in internal/legacychild, shared with
// `lakehouse demo`.
type (
	legacyChild = legacychild.Child
	childStats  = legacychild.Stats
)

// startLegacyChild connects c to url and runs it until the test ends.
func startLegacyChild(tb testing.TB, url string, c *legacyChild) *legacyChild {
	tb.Helper()
	c.OnError = func(err error) { tb.Errorf("%v", err) }
	if err := c.Start(context.Background(), url); err != nil {
		tb.Fatalf("legacy child: dial: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// waitIdle waits until c has no batch pending, failing the test after d.
func waitIdle(tb testing.TB, c *legacyChild, d time.Duration) childStats {
	tb.Helper()
	st, err := c.WaitIdle(d)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// TestLegacyChildAgainstFake runs the simulator through the bridge against
// the fake server, with a lost ack (timeout and resend under a new number)
// and a buffer_full nack (retry after retryDelayMs): every entry is stored
// exactly once.
func TestLegacyChildAgainstFake(t *testing.T) {
	fake := newFakeServer()
	var nacked sync.Once
	fake.respond = func(src string, frame []byte, b *codec.Batch) (resp *lakehousev1.StreamResponse, handled bool, err error) {
		if b != nil && b.Sequence == 5 {
			handled := false
			nacked.Do(func() {
				resp = nackResp(b.Sequence, string(b.CorrelationID), lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, "full")
				resp.GetNack().ShouldRetry, resp.GetNack().RetryDelayMs = true, 30
				handled = true
			})
			return resp, handled, nil
		}
		return nil, false, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	child := startLegacyChild(t, env.wsURL, &legacyChild{
		Source: "legacy-1", Shard: "shard-1", AckTimeout: 300 * time.Millisecond, Heartbeat: 50 * time.Millisecond,
		LoseAck: func(seq uint64) bool { return seq == 3 },
	})
	const batches, per = 12, 25
	for range batches {
		child.SendEntries(per)
	}
	st := waitIdle(t, child, 20*time.Second)
	time.Sleep(120 * time.Millisecond) // a heartbeat round
	st = child.Stats()
	if st.Failed != 0 || st.TimedOut < 1 || st.Resent < 2 || st.Duplicates < 1 || st.Nacked < 1 {
		t.Fatalf("stats %+v", st)
	}
	if st.Statuses < 1 || st.Pongs < 1 || st.TextPongs < 1 {
		t.Fatalf("no status/pong/text pong: %+v", st)
	}
	seqs := fake.entrySeqs("legacy-1")
	if len(seqs) != batches*per {
		t.Fatalf("stored %d entries, want %d", len(seqs), batches*per)
	}
	seen := map[uint64]bool{}
	for _, s := range seqs {
		if seen[s] || s < 1 || s > batches*per {
			t.Fatalf("entry %d stored twice or out of range", s)
		}
		seen[s] = true
	}
	for s := uint64(1); s <= batches*per; s++ {
		if st.AckedEntries[s] == 0 {
			t.Fatalf("entry %d never acked", s)
		}
	}
}
