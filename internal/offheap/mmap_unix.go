//go:build unix

package offheap

import "golang.org/x/sys/unix"

// outsideHeap: mapped blocks are outside the Go heap here.
const outsideHeap = true

// mapBlock maps n bytes of anonymous memory: zeroed, page aligned, outside
// the Go heap.
func mapBlock(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

func unmapBlock(m []byte) error {
	return unix.Munmap(m)
}

// retireBlock returns m's memory to the system and makes its pages
// inaccessible, keeping the addresses reserved: a read through a stale
// reference faults instead of seeing memory handed out again.
func retireBlock(m []byte) error {
	if err := unix.Madvise(m, unix.MADV_DONTNEED); err != nil {
		return err
	}
	return unix.Mprotect(m, unix.PROT_NONE)
}
