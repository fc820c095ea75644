//go:build unix

package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/icebergcheck"
)

// TestMirrorScanTimeSoak measures what issue 16 asks of mirror maintenance:
// the scan time of a mirror table over a long keyed run, with and without
// compaction. Two `lakehouse serve` processes (defaults, a 1-s commit
// interval) take the same open-loop keyed load; one runs with mirror
// compaction off. Every few minutes an outside reader times iceberg-go's scan
// of each mirror table and counts its data and delete files. A measurement,
// not a check of speed: it runs only with LAKEHOUSE_MIRROR_SCAN_MINUTES set
// (30 for the figure); LAKEHOUSE_MIRROR_SCAN_RATE is each server's
// offered changes/s (default 5000).
func TestMirrorScanTimeSoak(t *testing.T) {
	minutes, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_MIRROR_SCAN_MINUTES"))
	if minutes <= 0 {
		t.Skip("a measurement: set LAKEHOUSE_MIRROR_SCAN_MINUTES (30 for the issue's figure)")
	}
	rate := 5000
	if v := os.Getenv("LAKEHOUSE_MIRROR_SCAN_RATE"); v != "" {
		var err error
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 {
			t.Fatalf("LAKEHOUSE_MIRROR_SCAN_RATE=%q: want a positive number", v)
		}
	}
	dur := time.Duration(minutes) * time.Minute
	type server struct {
		name, dataDir, grpc, http string
		p                         *proc
		bench                     *exec.Cmd
		out                       bytes.Buffer
	}
	dir := t.TempDir()
	servers := []*server{{name: "compaction"}, {name: "no-compaction"}}
	for _, s := range servers {
		s.dataDir, s.grpc, s.http = filepath.Join(dir, s.name), freeAddr(t), freeAddr(t)
		args := []string{"serve", "--data-dir", s.dataDir, "--grpc-addr", s.grpc, "--http-addr", s.http,
			"--flush-interval", "1s", "--mirror"}
		if s.name == "no-compaction" {
			args = append(args, "--mirror-compact-delete-files", "-1", "--mirror-scan-budget", "-1")
		}
		s.p = startProc(t, s.grpc, filepath.Join(dir, s.name+".log"), args...)
	}
	for _, s := range servers {
		s.bench = exec.Command(lakehouseBin(t), "bench", "--addr", s.grpc, "--metrics-addr", s.http,
			"--workload", "keyed", "--keys", "50000", "--sources", "2", "--rate", strconv.Itoa(rate),
			"--duration", dur.String())
		s.bench.Stdout, s.bench.Stderr = &s.out, &s.out
		if err := s.bench.Start(); err != nil {
			t.Fatal(err)
		}
	}
	every := max(dur/10, time.Minute)
	t.Logf("%-8s %-14s %-10s %9s %10s %12s %10s", "minute", "server", "table", "rows", "data files", "delete files", "scan")
	measure := func(elapsed time.Duration) {
		for _, s := range servers {
			ctx := context.Background()
			mk, err := iceberg.Open(ctx, iceberg.Config{DataDir: s.dataDir, Namespace: mirrorNamespace, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Errorf("%s: open: %v", s.name, err)
				continue
			}
			infos, err := mk.Tables(ctx)
			if err != nil {
				t.Errorf("%s: tables: %v", s.name, err)
			}
			for _, in := range infos {
				tbl, err := mk.LoadTable(ctx, in.Name)
				if err != nil {
					t.Errorf("%s: %v", s.name, err)
					continue
				}
				start := time.Now()
				res, err := icebergcheck.ScanTable(ctx, tbl)
				took := time.Since(start)
				if err != nil {
					t.Errorf("%s: scan %s: %v", s.name, in.Name, err)
					continue
				}
				var dataFiles, deleteFiles string
				if snap := tbl.CurrentSnapshot(); snap != nil && snap.Summary != nil {
					dataFiles, deleteFiles = snap.Summary.Properties["total-data-files"], snap.Summary.Properties["total-delete-files"]
				}
				t.Logf("%-8.1f %-14s %-10s %9d %10s %12s %10s", elapsed.Minutes(), s.name, in.Name, len(res.Rows), dataFiles,
					deleteFiles, took.Round(time.Millisecond))
			}
			mk.Close()
		}
	}
	start := time.Now()
	for time.Since(start) < dur {
		time.Sleep(min(every, dur-time.Since(start)))
		measure(time.Since(start))
	}
	for _, s := range servers {
		if err := s.bench.Wait(); err != nil {
			t.Errorf("%s: bench: %v", s.name, err)
		}
		cpu := procCPU(t, s.p.cmd.Process.Pid)
		t.Logf("--- %s: server CPU %.1f s over the run\n%s", s.name, cpu, lastLines(s.out.String(), 12))
	}
}

// procCPU returns a process's user+system CPU seconds from /proc.
func procCPU(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Logf("cpu of %d: %v", pid, err)
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
