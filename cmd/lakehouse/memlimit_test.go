package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestMemoryLimit: by default the soft memory limit is the buffer cap plus
// the headroom, with the floor the sink holds it at while collections are
// cheap; an explicit value wins and stays (no floor), -1 sets none, and the
// previous limit comes back when serve ends.
func TestMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	before := debug.SetMemoryLimit(-1)
	for _, c := range []struct {
		setting, buffer, want, floor int64
	}{
		{0, 128 << 20, 128<<20 + memoryHeadroom, 128<<20 + memoryFloorHeadroom},
		{1 << 30, 128 << 20, 1 << 30, 0},
		{-1, 128 << 20, before, 0},
	} {
		restore, shared, floor := applyMemoryLimit(log, c.setting, c.buffer)
		if floor != c.floor {
			t.Errorf("--memory-limit %d with a %d-byte buffer: floor %d, want %d", c.setting, c.buffer, floor, c.floor)
		}
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("--memory-limit %d with a %d-byte buffer: limit %d, want %d", c.setting, c.buffer, got, c.want)
		}
		if wantShared := map[bool]int64{true: 0, false: c.want}[c.setting < 0]; shared != wantShared {
			t.Errorf("--memory-limit %d: the sink shares %d, want %d", c.setting, shared, wantShared)
		}
		restore()
		if got := debug.SetMemoryLimit(-1); got != before {
			t.Errorf("after restore: limit %d, want %d", got, before)
		}
	}
	// With GOMEMLIMIT the runtime's limit stays, and the sink shares it.
	t.Setenv("GOMEMLIMIT", "300MiB")
	debug.SetMemoryLimit(300 << 20)
	restore, shared, floor := applyMemoryLimit(log, 0, 128<<20)
	if got := debug.SetMemoryLimit(-1); got != 300<<20 || shared != 300<<20 || floor != 0 {
		t.Errorf("with GOMEMLIMIT: limit %d, shared %d, floor %d, want both %d and no floor", got, shared, floor, 300<<20)
	}
	restore()
	debug.SetMemoryLimit(before)
	err := serve(context.Background(), []string{"--memory-limit", "-2", "--data-dir", t.TempDir()}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("serve --memory-limit -2: %v, want an error naming the flag", err)
	}
	err = serve(context.Background(), []string{"--wal-commit-threshold", "1.5", "--data-dir", t.TempDir()}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--wal-commit-threshold") {
		t.Errorf("serve --wal-commit-threshold 1.5: %v, want an error naming the flag", err)
	}
}

// TestHeapProfilingOnlyWithPprof: serve samples allocations for heap
// profiles only when --pprof serves them.
func TestHeapProfilingOnlyWithPprof(t *testing.T) {
	prev := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = prev })
	runtime.MemProfileRate = 512 << 10
	startServe(t, "--pprof")
	if runtime.MemProfileRate != 512<<10 {
		t.Errorf("with --pprof: MemProfileRate %d, want it left at %d", runtime.MemProfileRate, 512<<10)
	}
	startServe(t)
	if runtime.MemProfileRate != 0 {
		t.Errorf("without --pprof: MemProfileRate %d, want 0", runtime.MemProfileRate)
	}
}
