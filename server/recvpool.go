package server

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// recvBufferPool is the buffer pool of the server's gRPC transport and of
// recvCodec (GRPCOptions): gRPC's default size classes, without clearing a
// reused buffer before handing it out (why that matters: recvCodec). gRPC
// fills every byte of a buffer it takes before reading it; grpc-go keeps
// such an uncleared pool for its own transports, but does not export it.
//
// A buffer above the largest class is allocated for its message and not
// kept: frames of several MiB are rare, and pooling them would keep that
// memory alive between them.
type recvBufferPool struct {
	classes [len(recvBufferClasses)]sync.Pool
}

// recvBufferClasses are the capacities of the pooled buffers, ascending:
// gRPC's defaults (mem.DefaultBufferPool).
var recvBufferClasses = [...]int{256, 4 << 10, 16 << 10, 32 << 10, 1 << 20}

var _ mem.BufferPool = (*recvBufferPool)(nil)

// Get returns a buffer of length n, with stale bytes in it.
func (p *recvBufferPool) Get(n int) *[]byte {
	for i, size := range recvBufferClasses {
		if n > size {
			continue
		}
		if b, ok := p.classes[i].Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, size)
		return &b
	}
	b := make([]byte, n)
	return &b
}

// Put keeps b for reuse in the largest class its capacity holds.
func (p *recvBufferPool) Put(b *[]byte) {
	if cap(*b) > recvBufferClasses[len(recvBufferClasses)-1] {
		return
	}
	for i := len(recvBufferClasses) - 1; i >= 0; i-- {
		if cap(*b) >= recvBufferClasses[i] {
			p.classes[i].Put(b)
			return
		}
	}
}
