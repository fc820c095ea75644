package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// TestBenchReportsServerMemory runs `lakehouse bench --metrics-addr` against
// a `lakehouse serve` process: the summary carries the server's CPU and its
// RSS over the run, read from the server's own /metrics, and the RSS is the
// server's (tens of MiB at least), not the generator's or zero.
func TestBenchReportsServerMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	dir := t.TempDir()
	addr, httpAddr := freeAddr(t), freeAddr(t)
	p := startProc(t, addr, filepath.Join(dir, "server.log"), "serve", "--data-dir", filepath.Join(dir, "data"),
		"--grpc-addr", addr, "--http-addr", httpAddr, "--no-maintenance")
	out, err := exec.Command(lakehouseBin(t), "bench", "--addr", addr, "--metrics-addr", httpAddr, "--frames",
		"--sources", "2", "--duration", "3s", "--progress", "0", "--json").Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var s bench.Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	m := s.Memory
	if m == nil {
		t.Fatalf("no memory report: %s", out)
	}
	t.Logf("%s", m)
	if m.Samples < 2 || m.MedianBytes < 20<<20 || m.MaxBytes < m.MedianBytes || m.MaxBytes > 8<<30 ||
		!strings.Contains(m.Source, "process_resident_memory_bytes of "+httpAddr) {
		t.Fatalf("memory report %+v", m)
	}
	if s.CPU == nil || s.CPU.ServerSeconds <= 0 {
		t.Fatalf("no server CPU figure: %s", out)
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Errorf("server stop: %v", err)
	}
}
