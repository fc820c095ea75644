package iceberg

import (
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkMirrorIndexMemory measures the heap an order index takes per key
// (keys "key-<n>", 4 sources, a fifth of the keys deleted):
//
//	go test ./iceberg -run '^$' -bench MirrorIndexMemory -benchtime 1x
func BenchmarkMirrorIndexMemory(b *testing.B) {
	const keys = 1_000_000
	sources := []string{"source-a", "source-b", "source-c", "source-d"}
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		idx := newMirrorIndex()
		for i := range keys {
			idx.set("key-"+strconv.Itoa(i), orderKey{eventMs: uint64(1_700_000_000_000 + i), source: sources[i%4], entry: uint64(i)}, i%5 == 0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/keys, "heap-bytes/key")
		runtime.KeepAlive(idx)
	}
}

// TestMirrorIndexSet: the index keeps the newest change per key, counts
// tombstones and forgets the old ones.
func TestMirrorIndexSet(t *testing.T) {
	x := newMirrorIndex()
	x.set("k", orderKey{10, "b", 1}, false)
	x.set("k", orderKey{10, "a", 9}, true) // older: ignored
	x.set("d", orderKey{5, "a", 1}, true)
	x.set("e", orderKey{20, "c", 1}, true)
	if o, _ := x.get("k"); o != (orderKey{10, "b", 1}) || x.tombstones != 2 || x.maxEventMs != 20 {
		t.Fatalf("k %v, tombstones %d, max %d", o, x.tombstones, x.maxEventMs)
	}
	x.set("d", orderKey{6, "a", 2}, false) // re-inserted
	if x.tombstones != 1 {
		t.Fatalf("tombstones %d", x.tombstones)
	}
	if n := x.forgetTombstones(21); n != 1 || x.tombstones != 0 || x.entries.len() != 2 {
		t.Fatalf("forgot %d, %d tombstones, %d entries", n, x.tombstones, x.entries.len())
	}
}

// BenchmarkMirrorIndexGC measures the CPU a full garbage collection takes
// while an order index of 2,000,000 keys is live (the index of a table of
// ever-new keys grows by every row):
//
//	go test ./iceberg -run '^$' -bench MirrorIndexGC -benchtime 10x
func BenchmarkMirrorIndexGC(b *testing.B) {
	const keys = 2_000_000
	idx := newMirrorIndex()
	for i := range keys {
		idx.set("row-"+strconv.Itoa(i), orderKey{eventMs: uint64(1_700_000_000_000 + i), source: "s", entry: uint64(i)}, false)
	}
	runtime.GC()
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		runtime.GC()
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/gc")
	runtime.KeepAlive(idx)
}
