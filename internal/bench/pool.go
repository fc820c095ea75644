package bench

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// framePoolSize is the number of distinct W1 frames a FramePool holds:
// 16,000 distinct rows per source, 3.4 MB.
const framePoolSize = 16

// FramePool is a source's W1 cdc_batch frames, encoded once. Frame(k) patches
// the pooled frame in place for the k-th batch of a run (batch number, entry
// sequences, timestamp, checksum) instead of building and encoding 1,000
// entries: the load generator then costs what a child that encodes on its own
// machine costs the server's machine, next to nothing.
type FramePool struct {
	batchSize int
	frames    [][]byte
	seqOffs   [][]int // per frame, the offset of each entry's sequence
}

// NewFramePool encodes the pool of source src: frame j holds W1 entries
// j*batchSize to (j+1)*batchSize-1, tables prefixed with tablePrefix.
func NewFramePool(src string, batchSize int, tablePrefix string) (*FramePool, error) {
	return newFramePoolOf(src, w1Batches(batchSize, tablePrefix))
}

// newFramePoolOf encodes the pool of source src: frame j holds the
// entries makeBatch(j) returns, all batches of one size.
func newFramePoolOf(src string, makeBatch func(j int) []codec.Entry) (*FramePool, error) {
	p := &FramePool{}
	for j := range framePoolSize {
		entries := makeBatch(j)
		if j == 0 {
			p.batchSize = len(entries)
		} else if len(entries) != p.batchSize {
			return nil, fmt.Errorf("bench: frame pool: batch %d has %d entries, batch 0 %d", j, len(entries), p.batchSize)
		}
		f, err := codec.EncodeBatch(&codec.Batch{SourceID: []byte(src), Entries: entries})
		if err != nil {
			return nil, err
		}
		b, err := codec.DecodeBatch(f, codec.DecodeOptions{SkipChecksum: true})
		if err != nil {
			return nil, err
		}
		offs := make([]int, len(b.Entries))
		off := codec.BatchHeaderSize + len(src) + 4
		for i := range b.Entries {
			offs[i] = off
			off += b.Entries[i].EncodedSize()
		}
		p.frames = append(p.frames, f)
		p.seqOffs = append(p.seqOffs, offs)
	}
	return p, nil
}

// Frame returns the frame of the k-th batch (from 0) of a run: batch number
// seq, entry sequences firstEntry+k*batchSize+1 onwards, the current time and
// a correct checksum. The frame is pooled: it stays valid until Frame is
// called for k+len(pool), so a caller sends it before asking again.
func (p *FramePool) Frame(k int64, seq, firstEntry uint64) []byte {
	j := int(k % int64(len(p.frames)))
	f, offs := p.frames[j], p.seqOffs[j]
	le := binary.LittleEndian
	le.PutUint64(f[8:], uint64(time.Now().UnixMilli()))
	le.PutUint64(f[16:], seq)
	base := firstEntry + uint64(k)*uint64(p.batchSize)
	for i, off := range offs {
		le.PutUint64(f[off:], base+uint64(i)+1)
	}
	le.PutUint32(f[36:], 0)
	le.PutUint32(f[36:], crc32.ChecksumIEEE(f))
	return f
}

// Entries is the number of entries of every frame.
func (p *FramePool) Entries() int { return p.batchSize }
