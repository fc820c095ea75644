// Package offheap is an Arrow memory allocator whose larger buffers live
// outside the Go heap, in memory mapped from the operating system, reused
// as Arrow releases them and returned to the system when the allocator is
// closed.
//
// Why: the garbage collector lets the heap grow to twice what was live at
// its last cycle (GOGC=100). A compaction merge holds 100-135 MB of Arrow
// buffers for a second or two (each input's page and batch, the output's
// encoders), so on the heap a merge raised the process's RSS by twice that.
// Off the heap the merge's buffers count once, and their memory is reused
// as soon as Arrow releases it instead of at the next collection.
//
// The price is that Arrow's reference counting decides when memory is
// reused: a buffer read after its last Release would see another buffer's
// bytes. arrow-go's Parquet reader and writer are built for allocators that
// free (its mallocator, C's malloc behind it); an Allocator serves work
// whose buffers are all released before it is closed, and buffers not
// released by then are retired (Close): their memory goes back to the
// system and a read of them faults, rather than seeing reused memory.
package offheap

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

const (
	// MinMapped is the smallest request served from mapped memory; smaller
	// ones (validity bitmaps, offsets of short batches) come from the Go
	// heap, where they cost little and a page of mapping would waste most
	// of its bytes.
	MinMapped = 16 << 10
	// maxClassShift bounds the pooled size classes (powers of two from
	// MinMapped to 64 MiB); a larger request is mapped to its own size
	// and unmapped when released.
	maxClassShift = 26
	minClassShift = 14
	numClasses    = maxClassShift - minClassShift + 1
)

// Allocator is a memory.Allocator for one piece of work (a merge). It is
// safe for concurrent use. Close it when the work's buffers are released.
type Allocator struct {
	heap memory.GoAllocator
	// budget, if not nil, counts mapped with other allocators' (budget.go).
	budget *Budget

	mu sync.Mutex
	// Guarded by mu.
	live   map[uintptr]block // handed-out mapped blocks by address
	free   [numClasses][][]byte
	mapped int64 // bytes mapped and not unmapped, free blocks included
	inUse  int64 // bytes of the blocks handed out
	peak   int64 // highest inUse
	// retired: bytes of blocks handed out at Close, their memory returned
	// (retireBlock) and their addresses kept until they are freed.
	retired int64
	closed  bool
}

// block is a mapped region handed out; class is -1 for one mapped to size.
type block struct {
	mem     []byte
	class   int
	retired bool // by Close
}

// New returns an empty Allocator. budget, if not nil, counts the bytes it
// maps (Budget).
func New(budget *Budget) *Allocator {
	return &Allocator{budget: budget, live: make(map[uintptr]block)}
}

var _ memory.Allocator = (*Allocator)(nil)

// Allocate returns size zeroed bytes, 64-byte aligned (mapped memory is
// page aligned).
func (a *Allocator) Allocate(size int) []byte {
	if size < MinMapped {
		return a.heap.Allocate(size)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		// Work that outlives its allocator gets heap memory: never memory
		// that nothing would unmap.
		return a.heap.Allocate(size)
	}
	return a.takeLocked(size)
}

// Reallocate resizes b, in place when its block has room.
func (a *Allocator) Reallocate(size int, b []byte) []byte {
	a.mu.Lock()
	blk, ok := a.live[addr(b)]
	a.mu.Unlock()
	if ok && size <= len(blk.mem) {
		out := blk.mem[:size:size]
		if size > len(b) {
			clear(out[len(b):]) // stale bytes of the block's earlier use
		}
		return out
	}
	if !ok && size < MinMapped {
		return a.heap.Reallocate(size, b)
	}
	out := a.Allocate(size)
	copy(out, b)
	a.Free(b)
	return out
}

// Free returns b's block for reuse. Heap buffers are left to the garbage
// collector; a second Free of a mapped block is ignored.
func (a *Allocator) Free(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := addr(b)
	blk, ok := a.live[p]
	if !ok {
		return
	}
	delete(a.live, p)
	a.inUse -= int64(len(blk.mem))
	if blk.retired {
		a.retired -= int64(len(blk.mem))
	}
	if blk.class < 0 || a.closed {
		a.unmapLocked(blk.mem)
		return
	}
	a.free[blk.class] = append(a.free[blk.class], blk.mem)
}

// Close unmaps the free blocks and stops mapping more. It returns the bytes
// of blocks still handed out: buffers the finished work did not release,
// such as those a Parquet reader pools until the garbage collector
// finalizes it, or what an error path dropped. Their memory goes back to
// the system and their pages become inaccessible, so that a stale read
// faults instead of seeing memory handed out again; each is unmapped if it
// is freed later.
func (a *Allocator) Close() (outstanding int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return a.inUse
	}
	a.closed = true
	for c := range a.free {
		for _, m := range a.free[c] {
			a.unmapLocked(m)
		}
		a.free[c] = nil
	}
	for p, blk := range a.live {
		if retireBlock(blk.mem) == nil {
			blk.retired = true
			a.live[p] = blk
			a.retired += int64(len(blk.mem))
		}
	}
	return a.inUse
}

// Stats are an Allocator's figures in bytes.
type Stats struct {
	Mapped  int64 // mapped now, free and retired blocks included
	InUse   int64 // handed out now
	Peak    int64 // highest InUse
	Retired int64 // handed out at Close and not freed since: no memory, addresses only
}

// Stats returns the allocator's figures.
func (a *Allocator) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Mapped: a.mapped, InUse: a.inUse, Peak: a.peak, Retired: a.retired}
}

// takeLocked hands out a block of at least size bytes, reused if one is
// free, else mapped; if mapping fails (address space, a platform without
// it) the heap serves the request.
func (a *Allocator) takeLocked(size int) []byte {
	class := classOf(size)
	var m []byte
	if class >= 0 && len(a.free[class]) > 0 {
		n := len(a.free[class]) - 1
		m = a.free[class][n]
		a.free[class][n] = nil
		a.free[class] = a.free[class][:n]
		clear(m[:size])
	} else {
		n := size
		if class >= 0 {
			n = 1 << (class + minClassShift)
		}
		var err error
		if m, err = mapBlock(n); err != nil {
			return a.heap.Allocate(size)
		}
		a.addMappedLocked(int64(n))
	}
	a.live[addr(m)] = block{mem: m, class: class}
	a.inUse += int64(len(m))
	a.peak = max(a.peak, a.inUse)
	return m[:size:size]
}

func (a *Allocator) unmapLocked(m []byte) {
	if unmapBlock(m) == nil {
		a.addMappedLocked(-int64(len(m)))
	}
}

func (a *Allocator) addMappedLocked(n int64) {
	a.mapped += n
	a.budget.add(n)
}

// classOf returns the pooled size class for size (at least MinMapped), or
// -1 when it is larger than the largest class.
func classOf(size int) int {
	shift := bits.Len(uint(size - 1))
	if shift > maxClassShift {
		return -1
	}
	return max(shift, minClassShift) - minClassShift
}

func addr(b []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
