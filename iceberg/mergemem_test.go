package iceberg

import (
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/offheap"
)

// TestMergeMemory (LAKEHOUSE_MERGE_MEM=<staged files>) stages that many
// flushes of W1 (140,000 entries each, about 1.4 s of them at 100,000
// entries/s; LAKEHOUSE_MERGE_MEM_ENTRIES sets another count), runs one
// maintenance pass, and reports what a pass's RSS peak is made of: each
// merge's off-heap peak, and the Go heap's highest in-use and live bytes
// while the pass ran, with the pass's CPU time. Seconds instead of minutes
// of load, and the same figures run after run. With
// LAKEHOUSE_MERGE_MEM_PROFILE=<file>, the heap profile at the highest live
// heap is written there.
func TestMergeMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_MERGE_MEM"))
	if n == 0 {
		t.Skip("set LAKEHOUSE_MERGE_MEM=<staged files> (43 is a minute at 100,000 W1 entries/s)")
	}
	entries := int64(140000)
	if v, _ := strconv.ParseInt(os.Getenv("LAKEHOUSE_MERGE_MEM_ENTRIES"), 10, 64); v > 0 {
		entries = v
	}
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 12 })
	per := entries / int64(len(testSources))
	for i := 1; i <= n; i++ {
		mustCommit(t, s, w1Flush(uint64(i), testSources, uint64(i), 1, per))
	}
	var (
		sizes []int64
		total int64
	)
	for _, f := range liveFiles(t, s, "events") {
		if fi, err := os.Stat(strings.TrimPrefix(f, "file://")); err == nil {
			sizes = append(sizes, fi.Size())
			total += fi.Size()
		}
	}
	t.Logf("events: %d staged files, %.1f MB, sizes %v", len(sizes), float64(total)/1e6, sizes[:min(len(sizes), 5)])
	runtime.GC()
	base := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(base)
	t.Logf("before the pass: heap objects %.1f MB, runtime total %.1f MB", float64(base[0].Value.Uint64())/1e6, float64(base[1].Value.Uint64())/1e6)

	var (
		mu     sync.Mutex
		merges []offheap.Stats
	)
	s.afterOffHeapMerge = func(st offheap.Stats, _ int64) {
		mu.Lock()
		merges = append(merges, st)
		mu.Unlock()
	}
	var stop atomic.Bool
	var peakObjects, peakLive, peakTotal uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"},
			{Name: "/memory/classes/total:bytes"}}
		for !stop.Load() {
			metrics.Read(samples)
			peakObjects = max(peakObjects, samples[0].Value.Uint64())
			if live := samples[1].Value.Uint64(); live > peakLive {
				peakLive = live
				if path := os.Getenv("LAKEHOUSE_MERGE_MEM_PROFILE"); path != "" {
					if f, err := os.Create(path); err == nil {
						_ = pprof.Lookup("heap").WriteTo(f, 0)
						f.Close()
					}
				}
			}
			peakTotal = max(peakTotal, samples[2].Value.Uint64())
			time.Sleep(time.Millisecond)
		}
	}()
	start, cpu := time.Now(), processCPU()
	maintain(t, s, MaintainOptions{})
	cpu = processCPU() - cpu
	stop.Store(true)
	<-done
	mu.Lock()
	defer mu.Unlock()
	var peakOff int64
	for _, st := range merges {
		peakOff = max(peakOff, st.Peak)
	}
	t.Logf("pass %.1fs (%.1f CPU-s), %d off-heap merges, off-heap peak %.1f MB; heap objects peak %.1f MB, live peak %.1f MB, runtime total peak %.1f MB",
		time.Since(start).Seconds(), cpu.Seconds(), len(merges), float64(peakOff)/1e6, float64(peakObjects)/1e6, float64(peakLive)/1e6, float64(peakTotal)/1e6)
	for i, st := range merges {
		t.Logf("merge %d: off-heap peak %.1f MB", i, float64(st.Peak)/1e6)
	}
}
