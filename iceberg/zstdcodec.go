package iceberg

import (
	"runtime"
	"sync"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
)

// zstdWindow is the zstd window of the Parquet pages this sink writes.
// Pages are cut at about 1 MiB (arrow-go's default data page size), so a
// longer back-reference never finds anything; arrow-go's encoders use
// zstd's default 8-MiB window, and each pooled encoder then keeps 16 MiB of
// history (twice the window) for nothing.
const zstdWindow = 1 << 20

// The Parquet writer compresses pages with the process-wide zstd codec of
// arrow-go's registry, so the smaller window is registered once, the way
// arrow-go documents replacing a codec. Decoding and streaming stay
// arrow-go's.
func init() {
	c, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		return
	}
	if base, ok := c.(arrowZstd); ok {
		compress.RegisterCodec(compress.Codecs.Zstd, newZstdCodec(base))
	}
}

// arrowZstd is what arrow-go's zstd codec implements.
type arrowZstd interface {
	compress.Codec
	compress.StreamingCodec
	DecodeWithError(dst, src []byte) ([]byte, error)
}

// zstdCodec encodes pages with pooled encoders of window zstdWindow.
type zstdCodec struct {
	arrowZstd
	// pools holds one encoder pool per zstd.EncoderLevel (1-4).
	pools [zstd.SpeedBestCompression + 1]sync.Pool
}

// zstdPageOptions are the encoder options of a page at level l. Frames carry
// no content checksum, as the reference zstd library writes them by
// default (this library's default adds one): hashing every page (xxhash)
// was 1.4% of the server's CPU at saturation. Parquet has a page checksum
// of its own for readers that want one.
func zstdPageOptions(l zstd.EncoderLevel) []zstd.EOption {
	return []zstd.EOption{zstd.WithZeroFrames(true), zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1),
		zstd.WithAllLitEntropyCompression(true), zstd.WithWindowSize(zstdWindow), zstd.WithEncoderCRC(false)}
}

func newZstdCodec(base arrowZstd) *zstdCodec {
	c := &zstdCodec{arrowZstd: base}
	for l := zstd.SpeedFastest; l <= zstd.SpeedBestCompression; l++ {
		c.pools[l].New = func() any {
			// The options are constants, valid for every level.
			enc, _ := zstd.NewWriter(nil, zstdPageOptions(l)...)
			return enc
		}
	}
	return c
}

func (c *zstdCodec) Encode(dst, src []byte) []byte {
	return c.EncodeLevel(dst, src, compress.DefaultCompressionLevel)
}

// EncodeLevel maps a level as arrow-go does (a zstd level), except the
// default: zstd's fastest encoder, where arrow-go uses SpeedDefault (level
// 3). On a 1-MiB page of CDC row images it compresses as well (W1: 0.3%
// smaller, the keyed workload: 0.5% bigger) for half and three quarters of
// the CPU respectively, and zstd is 10 to 30% of the server's CPU. A table
// can still ask for a level with write.parquet.compression-level.
func (c *zstdCodec) EncodeLevel(dst, src []byte, level int) []byte {
	l := zstd.SpeedFastest
	if level != compress.DefaultCompressionLevel {
		l = zstd.EncoderLevelFromZstd(level)
	}
	enc := c.pools[l].Get().(*zstd.Encoder)
	out := enc.EncodeAll(src, dst[:0])
	c.pools[l].Put(enc)
	// Every page compressed steps aside (internal/pace): arrow-go encodes
	// and compresses the pages of a record inside one call, out of reach of
	// the caller's Pacer (a slice of 4,096 rows in openFile.write ran 4-10
	// ms), and only background work (staging, compaction, mirrors, the
	// command line's tools) writes Parquet. A changelog page is 256 KiB, a
	// staged file's 64 KiB (stagedPageBytes).
	runtime.Gosched()
	return out
}
