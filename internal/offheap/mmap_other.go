//go:build !unix

package offheap

// outsideHeap: mapped blocks are in the Go heap here (mapBlock).
const outsideHeap = false

// mapBlock allocates from the Go heap where the platform has no anonymous
// mmap: the Allocator still reuses what Arrow releases at once, but its
// blocks count in the heap.
func mapBlock(n int) ([]byte, error) {
	return make([]byte, n), nil
}

func unmapBlock([]byte) error { return nil }

func retireBlock([]byte) error { return nil }
