package server

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

func TestRecvBufferPoolSizes(t *testing.T) {
	var p recvBufferPool
	for _, tc := range []struct{ n, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 4 << 10}, {5000, 16 << 10},
		{20 << 10, 32 << 10}, {200 << 10, 1 << 20}, {1 << 20, 1 << 20},
		{1<<20 + 1, 1<<20 + 1}, {3 << 20, 3 << 20},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
		p.Put(b)
	}
}

// TestRecvBufferPoolReuse: a buffer put back is handed out again, in any
// length its class holds, without being cleared (the point of the pool);
// a buffer above the largest class is not kept.
func TestRecvBufferPoolReuse(t *testing.T) {
	var p recvBufferPool
	stale := bytes.Repeat([]byte{0xAB}, 100<<10)
	reused := false
	// sync.Pool may drop what is put (the race detector drops a quarter of
	// it on purpose): try until a buffer comes back.
	for range 100 {
		b := p.Get(len(stale))
		copy(*b, stale)
		p.Put(b)
		c := p.Get(50 << 10)
		if len(*c) != 50<<10 {
			t.Fatalf("Get(%d) returned %d bytes", 50<<10, len(*c))
		}
		if &(*c)[:1][0] == &(*b)[:1][0] {
			reused = true
			if !bytes.Equal(*c, stale[:50<<10]) {
				t.Fatal("a reused buffer was cleared")
			}
			break
		}
	}
	if !reused {
		t.Fatal("no buffer was reused in 100 rounds")
	}
	for range 100 {
		big := p.Get(2 << 20)
		p.Put(big)
		if c := p.Get(1 << 20); cap(*c) > 1<<20 {
			t.Fatalf("a %d-byte buffer was kept and handed out for 1 MiB", cap(*c))
		}
	}
}

// TestRecvCodecGathersFrames: a message that arrives in several buffers
// decodes as grpc-go's codec decodes it, also from a reused buffer holding a
// larger message's bytes, and from one buffer.
func TestRecvCodecGathersFrames(t *testing.T) {
	c := newRecvCodec(&recvBufferPool{})
	msg := func(n int) *lakehousev1.StreamRequest {
		frame := make([]byte, n)
		for i := range frame {
			frame[i] = byte(i % 251)
		}
		return &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}
	}
	split := func(b []byte, size int) mem.BufferSlice {
		var s mem.BufferSlice
		for len(b) > 0 {
			n := min(size, len(b))
			s = append(s, mem.SliceBuffer(b[:n]))
			b = b[n:]
		}
		return s
	}
	for _, tc := range []struct{ n, frameSize int }{{300 << 10, 16 << 10}, {1000, 16 << 10}, {200 << 10, 16 << 10}, {5 << 20, 16 << 10}, {100 << 10, 1 << 20}} {
		want := msg(tc.n)
		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got lakehousev1.StreamRequest
		if err := c.Unmarshal(split(wire, tc.frameSize), &got); err != nil {
			t.Fatalf("%d bytes in %d-byte frames: %v", tc.n, tc.frameSize, err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("%d bytes in %d-byte frames: decoded message differs", tc.n, tc.frameSize)
		}
	}
	if err := c.Unmarshal(split([]byte{1}, 1), "not a message"); err == nil {
		t.Error("a non-protobuf value decoded")
	}
}
