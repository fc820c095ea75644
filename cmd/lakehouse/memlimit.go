package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
)

const (
	memoryLimitKey = "memory-limit"
	// memoryLimitDefault derives the limit from the memory buffer cap.
	memoryLimitDefault int64 = 0
	// memoryHeadroom, the default limit's ceiling, is what the process holds
	// beyond the memory buffer under sustained load: one flush read back and
	// decoded, its Arrow record and Parquet encoders, gRPC buffers (with W1
	// at saturation about 100 MB live besides a full buffer), and a
	// compaction's merge inputs (up to another 130 MB, about half of it off
	// the Go heap: the sink lowers the runtime's limit by as much while a
	// merge holds it, so the limit covers both; iceberg.Config.MemoryLimit).
	// Without a limit the garbage collector lets the heap grow to twice what
	// is live (GOGC), gigabytes while compacting; a limit at or below what
	// is live makes it run all the time (with 128 MiB of headroom the CPU
	// per entry more than doubled).
	memoryHeadroom int64 = 384 << 20
	// memoryFloorHeadroom is where the default limit starts and stays
	// while collections are cheap: the buffer cap plus this, with the
	// binary's own 60-70 MiB of pages, is about the buffer cap plus 150
	// MB of RSS. The sink raises it toward memoryHeadroom while the
	// collector takes a sustained share of the CPU (offheap.Budget.Govern),
	// as at saturation, where a limit this low cost 40% of the throughput.
	memoryFloorHeadroom int64 = 80 << 20
)

// memoryLimitUsage is the flag's help text.
const memoryLimitUsage = "soft memory limit of the process in bytes (Go's runtime/debug.SetMemoryLimit, lowered by what compaction holds off the Go heap): " +
	"the garbage collector works harder to stay below it; 0: --max-buffer-bytes + 80 MiB while collections are cheap, rising to --max-buffer-bytes + 384 MiB " +
	"while they take a sustained share of the CPU or in a burst; -1: none (GOMEMLIMIT, when set, wins over both)"

// applyMemoryLimit sets the process's soft memory limit from the
// --memory-limit setting and the buffer cap, and returns a function that
// restores the previous one (serve runs in-process in tests) and the limit
// in effect, for the sink to share with its off-heap merges
// (iceberg.Config.MemoryLimit): GOMEMLIMIT's when it is set, 0 for none.
// With the default setting it also returns the floor the sink holds the
// limit at while collections are cheap (iceberg.Config.MemoryLimitFloor);
// a limit set explicitly stays where it is set (floor 0).
func applyMemoryLimit(log *slog.Logger, setting, maxBuffer int64) (restore func(), limit, floor int64) {
	if setting < 0 {
		return func() {}, 0, 0
	}
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		log.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", env)
		prev := debug.SetMemoryLimit(-1)
		return func() { debug.SetMemoryLimit(prev) }, prev, 0
	}
	limit = setting
	if limit == memoryLimitDefault {
		limit, floor = maxBuffer+memoryHeadroom, maxBuffer+memoryFloorHeadroom
	}
	prev := debug.SetMemoryLimit(limit)
	log.Info("soft memory limit", "bytes", limit, "floor_bytes", floor)
	return func() { debug.SetMemoryLimit(prev) }, limit, floor
}

// stopHeapProfiling turns off the runtime's sampling of allocations for heap
// profiles, which nothing reads without --pprof: every allocation above
// 512 KiB (runtime.MemProfileRate) is recorded with its stack, the Parquet
// writer grows its page buffers in such steps, and the sampling was 1.6% of
// the server's CPU at 150,000 entries/s. Set once, at start: the runtime reads
// the rate without synchronization.
func stopHeapProfiling() { runtime.MemProfileRate = 0 }
