package offheap

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func TestAllocateZeroedAndAligned(t *testing.T) {
	a := New(nil)
	defer a.Close()
	for _, size := range []int{0, 1, 100, MinMapped - 1, MinMapped, MinMapped + 1, 1 << 20, 3<<20 + 5} {
		b := a.Allocate(size)
		if len(b) != size || cap(b) != size {
			t.Fatalf("Allocate(%d): len %d cap %d", size, len(b), cap(b))
		}
		if size > 0 && addr(b)%64 != 0 {
			t.Fatalf("Allocate(%d) at %#x: not 64-byte aligned", size, addr(b))
		}
		if !allZero(b) {
			t.Fatalf("Allocate(%d): not zeroed", size)
		}
		a.Free(b)
	}
}

// A freed block is handed out again for a request of its class, zeroed
// over the request although its earlier user wrote all of it.
func TestFreedBlockReusedZeroed(t *testing.T) {
	a := New(nil)
	defer a.Close()
	b := a.Allocate(100 << 10)
	fill(b, 0xAB)
	first := addr(b)
	a.Free(b)
	c := a.Allocate(120 << 10) // the same 128-KiB class
	if addr(c) != first {
		t.Fatalf("a freed block of the class was not reused")
	}
	if !allZero(c) {
		t.Fatalf("a reused block kept its earlier user's bytes")
	}
	if st := a.Stats(); st.Mapped != 128<<10 || st.InUse != 128<<10 {
		t.Fatalf("stats %+v, want one 128-KiB block mapped and in use", st)
	}
	a.Free(c)
}

func TestReallocateKeepsContents(t *testing.T) {
	a := New(nil)
	defer a.Close()
	b := a.Allocate(20 << 10)
	fill(b, 7)
	// Within the block's 32-KiB class: in place, the growth zeroed.
	c := a.Reallocate(30<<10, b)
	if addr(c) != addr(b) || !bytes.Equal(c[:20<<10], b) || !allZero(c[20<<10:]) {
		t.Fatalf("in-place growth lost contents or kept stale bytes")
	}
	// Shrink then grow in place: the bytes past the shrink read as zero.
	d := a.Reallocate(10<<10, c)
	e := a.Reallocate(30<<10, d)
	if !allZero(e[10<<10:]) {
		t.Fatalf("growth after a shrink kept stale bytes")
	}
	// Beyond the class: moved, the old block freed.
	f := a.Reallocate(1<<20, e)
	if addr(f) == addr(e) || !bytes.Equal(f[:10<<10], bytes.Repeat([]byte{7}, 10<<10)) {
		t.Fatalf("moved growth lost contents")
	}
	// From the heap into mapped memory.
	h := a.Allocate(100)
	fill(h, 9)
	g := a.Reallocate(64<<10, h)
	if !bytes.Equal(g[:100], h) || !allZero(g[100:]) {
		t.Fatalf("growth from the heap lost contents")
	}
	a.Free(f)
	a.Free(g)
	if out := a.Close(); out != 0 {
		t.Fatalf("Close: %d bytes outstanding after every buffer was freed", out)
	}
}

// Close unmaps what is free, reports what is not, and makes it fault
// rather than read as memory handed out again; it is unmapped once freed.
func TestCloseRetiresOutstanding(t *testing.T) {
	a := New(nil)
	kept := a.Allocate(64 << 10)
	fill(kept, 1)
	a.Free(a.Allocate(64 << 10))
	a.Free(a.Allocate(1 << 20))
	if out := a.Close(); out != 64<<10 {
		t.Fatalf("Close: %d outstanding, want %d", out, 64<<10)
	}
	if st := a.Stats(); st.Mapped != 64<<10 || st.Retired != 64<<10 {
		t.Fatalf("after Close: %+v, want only the outstanding block mapped, retired", st)
	}
	if outsideHeap && !faults(func() { readByte(kept, 100) }) {
		t.Fatal("a retired block can still be read")
	}
	if b := a.Allocate(64 << 10); addr(b) == addr(kept) || len(b) != 64<<10 || !allZero(b) {
		t.Fatal("Allocate after Close")
	}
	a.Free(kept)
	if st := a.Stats(); st.Mapped != 0 || st.InUse != 0 || st.Retired != 0 {
		t.Fatalf("after the last free: %+v", st)
	}
}

//go:noinline
func readByte(b []byte, i int) byte { return b[i] }

// faults reports whether f faulted on a memory access.
func faults(f func()) (faulted bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() { faulted = recover() != nil }()
	f()
	return false
}

func TestDoubleFreeIgnored(t *testing.T) {
	a := New(nil)
	defer a.Close()
	b := a.Allocate(64 << 10)
	a.Free(b)
	a.Free(b)
	x, y := a.Allocate(64<<10), a.Allocate(64<<10)
	if addr(x) == addr(y) {
		t.Fatal("a block freed twice was handed out twice")
	}
	a.Free(x)
	a.Free(y)
}

// Mapped buffers are not in the Go heap: that is the point.
func TestBuffersOutsideHeap(t *testing.T) {
	if !outsideHeap {
		t.Skip("no anonymous mmap on " + runtime.GOOS)
	}
	a := New(nil)
	defer a.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var bufs [][]byte
	for range 64 {
		b := a.Allocate(1 << 20)
		fill(b, 3)
		bufs = append(bufs, b)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 8<<20 {
		t.Fatalf("64 MiB allocated grew the heap by %d bytes", grown)
	}
	for _, b := range bufs {
		a.Free(b)
	}
}

// Arrow builders and arrays on the allocator release every mapped block.
func TestArrowArraysReleaseEverything(t *testing.T) {
	a := New(nil)
	mem := memory.NewCheckedAllocator(a)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				b := array.NewStringBuilder(mem)
				for i := range 20000 {
					b.Append(string(rune('a' + (i+g)%26)))
				}
				arr := b.NewStringArray()
				b.Release()
				if arr.Len() != 20000 || arr.Value(3) != string(rune('a'+(3+g)%26)) {
					t.Errorf("array contents")
				}
				arr.Release()
			}
		}()
	}
	wg.Wait()
	mem.AssertSize(t, 0)
	if st := a.Stats(); st.Peak < MinMapped {
		t.Fatalf("nothing was mapped: %+v", st)
	}
	if out := a.Close(); out != 0 {
		t.Fatalf("%d bytes outstanding", out)
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// A Budget counts what every allocator of it has mapped.
func TestBudgetCountsMapped(t *testing.T) {
	budget := NewBudget(0)
	a, b := New(budget), New(budget)
	x := a.Allocate(100 << 10) // a 128-KiB block
	y := b.Allocate(1 << 20)
	a.Free(x) // kept for reuse: still mapped
	if got := budget.Mapped(); got != 128<<10+1<<20 {
		t.Fatalf("mapped %d, want %d", got, 128<<10+1<<20)
	}
	a.Close()
	if got := budget.Mapped(); got != 1<<20 {
		t.Fatalf("after one Close: mapped %d, want %d", got, 1<<20)
	}
	b.Free(y)
	b.Close()
	if got := budget.Mapped(); got != 0 {
		t.Fatalf("after both: mapped %d", got)
	}
}

// With a limit, the Go runtime's limit is the process's less what is
// mapped (in steps, never below half), and comes back when it is unmapped.
func TestBudgetLowersRuntimeLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const limit = 256 << 20
	debug.SetMemoryLimit(limit)
	budget := NewBudget(limit)
	a := New(budget)
	small := a.Allocate(1 << 20)
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("1 MiB mapped moved the limit to %d (steps of %d)", got, budgetStep)
	}
	big := a.Allocate(64 << 20)
	if got, want := debug.SetMemoryLimit(-1), int64(limit-65<<20); got != want || budget.RuntimeLimit() != want {
		t.Fatalf("65 MiB mapped: runtime limit %d, want %d", got, want)
	}
	huge := a.Allocate(200 << 20)
	if got := debug.SetMemoryLimit(-1); got != limit/2 {
		t.Fatalf("265 MiB mapped: runtime limit %d, want the floor %d", got, limit/2)
	}
	a.Free(huge)
	a.Free(big)
	a.Free(small)
	a.Close()
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("nothing mapped: runtime limit %d, want %d back", got, limit)
	}
}

// While work holds a Budget with a limit, the collector keeps half its
// room; the process's GOGC is back once every hold is released (a second
// release changes nothing). Without a limit, or with the collector off,
// GOGC is left alone.
func TestBudgetHoldHalvesTheCollectorsRoom(t *testing.T) {
	prev := debug.SetGCPercent(120)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	budget := NewBudget(256 << 20)
	r1 := budget.Hold()
	r2 := budget.Hold()
	if got := currentGCPercent(); got != 60 {
		t.Fatalf("held: GOGC %d, want 60", got)
	}
	r1()
	r1()
	if got := currentGCPercent(); got != 60 {
		t.Fatalf("one of two holds released (twice): GOGC %d, want 60", got)
	}
	r2()
	if got := currentGCPercent(); got != 120 {
		t.Fatalf("released: GOGC %d, want 120 back", got)
	}
	NewBudget(0).Hold()()
	defer NewBudget(0).Hold()()
	if got := currentGCPercent(); got != 120 {
		t.Fatalf("a Budget without a limit moved GOGC to %d", got)
	}
	debug.SetGCPercent(-1)
	off := NewBudget(256 << 20)
	release := off.Hold()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("with the collector off, a hold set GOGC to %d", got)
	}
	release()
}
