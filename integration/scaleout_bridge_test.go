//go:build unix

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestScaleOutBridgeRedirect: a standalone `lakehouse bridge` process in
// front of instance b carries a legacy child whose source instance a owns
// (another child of the same source streams to a through a's own bridge).
// b answers the bridge's connect with Redirect; the bridge follows it to a
// for the child, which cannot follow anything itself; a takes the source's
// stream over, b accepts nothing, and every entry of both children is
// stored exactly once.
func TestScaleOutBridgeRedirect(t *testing.T) {
	so := newScaleOut(t)
	httpA := freeAddr(t)
	a, _ := so.start("a", "--flush-interval", "1s", "--http-addr", httpA)
	b, addrB := so.start("b", "--flush-interval", "1s")
	bridgeLog := filepath.Join(so.dir, "bridge.log")
	bridgeHTTP := startBridge(t, bridgeLog, "bridge", "--upstream", addrB, "--log-level", "debug")
	const id, n1, n2 = "bridge-redirect", 200, 300
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child := func(offset int64) *legacychild.Child {
		return &legacychild.Child{Source: id, AckTimeout: 10 * time.Second, MaxRetries: 100,
			Entries: func(first uint64, n int) []codec.Entry { return workload.Entries(offset+int64(first-1), int64(n)) }}
	}
	first := child(0)
	if err := first.Start(ctx, "ws://"+httpA+"/cdc"); err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SendEntries(n1)
	if _, err := first.WaitIdle(time.Minute); err != nil {
		t.Fatalf("first child through a: %v\n%s", err, so.logs("a", "b"))
	}
	// first stays connected: a holds the lease.
	second := child(n1)
	if err := second.Start(ctx, "ws://"+bridgeHTTP+"/cdc"); err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SendEntries(n2)
	st, err := second.WaitIdle(time.Minute)
	if err != nil {
		t.Fatalf("second child through the bridge: %v\n%s\n--- bridge\n%s", err, so.logs("a", "b"), readLog(t, bridgeLog))
	}
	if st.Failed != 0 {
		t.Errorf("second child: %+v", st)
	}
	if log := readLog(t, bridgeLog); !strings.Contains(log, "following redirect") {
		t.Errorf("the bridge did not follow a redirect:\n%s", log)
	}
	for _, s := range statusOf(t, addrB).GetSources() {
		if s.GetSourceId() == id && s.GetBatchesReceived() > 0 {
			t.Errorf("b accepted %d batches of the source a owns", s.GetBatchesReceived())
		}
	}
	second.Close()
	first.Close()
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	counts := make(map[uint64]int)
	for _, r := range so.read() {
		if r.source == id {
			counts[r.entry]++
		}
	}
	for q := uint64(1); q <= n1+n2; q++ {
		if counts[q] != 1 {
			t.Errorf("entry %d stored %d times", q, counts[q])
		}
	}
	if len(counts) != n1+n2 {
		t.Errorf("%d distinct entries stored, want %d", len(counts), n1+n2)
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}
