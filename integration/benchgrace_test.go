//go:build unix

package integration

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchEndsWhenServerStops runs `lakehouse bench` against a server that
// is paused (SIGSTOP) in the middle of the run: the bench ends within its
// grace period after its duration, prints what stayed unacknowledged and
// exits non-zero, instead of waiting for the server forever.
func TestBenchEndsWhenServerStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	p := startProc(t, addr, logPath, "serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr,
		"--http-addr", "", "--sink", "jsonl", "--no-maintenance")
	const (
		duration = 3 * time.Second
		grace    = 2 * time.Second
	)
	var stdout, stderr bytes.Buffer
	bench := exec.Command(lakehouseBin(t), "bench", "--addr", addr, "--sources", "2", "--batch", "200",
		"--duration", duration.String(), "--grace", grace.String(), "--progress", "500ms")
	bench.Stdout, bench.Stderr = &stdout, &stderr
	start := time.Now()
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- bench.Wait() }()
	time.Sleep(time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer p.cmd.Process.Signal(syscall.SIGCONT)
	// The bound: the duration, then no ack for a grace period stops
	// sending, then one grace period to drain; and process start-up.
	limit := duration + 2*grace + 10*time.Second
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = bench.Process.Kill()
		<-done
		t.Fatalf("bench still running %v after its start (server paused)\nstdout:\n%s\nstderr:\n%s", limit, stdout.String(), stderr.String())
	}
	t.Logf("bench ended after %v: %v\n%s", time.Since(start).Round(time.Millisecond), err, stdout.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("bench exit: %v, want a non-zero status", err)
	}
	if !strings.Contains(stdout.String(), "UNACKNOWLEDGED") || !strings.Contains(stderr.String(), "not acknowledged") {
		t.Errorf("bench did not report the unacknowledged entries\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}
