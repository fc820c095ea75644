package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// TestMirrorFreshness runs `lakehouse bench --mirror-freshness` against a
// server with mirrors on (--mirror) under a small open-loop keyed load:
// every marker must become visible to the outside reader polling the
// mirror through the catalog, no poll may fail, and the delays are
// reported. No timing is asserted beyond the markers being seen before the
// grace period ends.
func TestMirrorFreshness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	p := startProc(t, addr, logPath, "serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", "",
		"--mirror", "--flush-interval", "300ms", "--log-level", "warn")
	defer p.stop(30 * time.Second)
	out, err := exec.Command(lakehouseBin(t), "bench", "--addr", addr, "--workload", "keyed", "--keys", "2000", "--sources", "2",
		"--rate", "2000", "--duration", "3s", "--progress", "0", "--json", "--grace", "30s",
		"--mirror-freshness", "--data-dir", dataDir, "--marker-interval", "200ms").Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s\nserver log:\n%s", err, out, readLog(t, logPath))
	}
	var s bench.Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("bench output %q: %v", out, err)
	}
	f := s.Freshness
	if f == nil || f.Markers < 5 || f.Seen != f.Markers || f.P50Ms <= 0 || f.MaxMs < f.P99Ms || f.P99Ms < f.P50Ms {
		t.Fatalf("freshness report %+v", f)
	}
	// An outside reader's poll fails only on a real error: before the
	// first commit creates the mirror, nothing is visible yet (before the
	// fix, each of those polls counted as failed).
	if f.PollErrors != 0 {
		t.Errorf("%d of %d polls failed; the last: %s", f.PollErrors, f.Polls, f.LastPollError)
	}
	t.Logf("%s (last poll error: %q)", f, f.LastPollError)
}
