package iceberg

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"

	"github.com/dot-do/lakehouse-rpc/internal/testing/turns"
)

// pageOfRows returns about n bytes of W1-like column data: compressible,
// but not trivially.
func pageOfRows(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"user-%d","city":"city-%d","score":%d.%d}`, i, i*7919%100003, i%97, i*31%1000, i%10)
	}
	return b.Bytes()[:n]
}

// TestZstdCodecWindow: the Parquet writer's zstd codec is the small-window
// one, with the fastest encoder at the default level. A fresh encoder costs a few MiB for a 1-MiB page, where arrow-go's
// own (8-MiB window) allocated over 16 MiB of history per pooled encoder;
// the page compresses as well and decodes with arrow-go's decoder.
func TestZstdCodecWindow(t *testing.T) {
	c, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	zc, ok := c.(*zstdCodec)
	if !ok {
		t.Fatalf("registered zstd codec is %T, not the small-window codec", c)
	}
	page := pageOfRows(1 << 20)
	// Two collections empty the encoder pools, so the next encode builds a
	// new encoder, as after an idle period.
	runtime.GC()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out := c.EncodeLevel(nil, page, compress.DefaultCompressionLevel)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("compressing one 1-MiB page with a fresh encoder allocated %d MiB", alloc>>20)
	}
	back, err := compress.Decode(c, nil, out)
	if err != nil || !bytes.Equal(back, page) {
		t.Fatalf("round trip: %v (equal %v)", err, bytes.Equal(back, page))
	}
	ref := zc.arrowZstd.EncodeLevel(nil, page, compress.DefaultCompressionLevel)
	if float64(len(out)) > 1.01*float64(len(ref)) {
		t.Errorf("1-MiB page: %d bytes with a 1-MiB window, %d with arrow-go's 8-MiB window", len(out), len(ref))
	}
	t.Logf("1-MiB page: %d bytes (arrow-go's codec: %d)", len(out), len(ref))
	// The default level is zstd's fastest encoder (see EncodeLevel).
	fastest, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithAllLitEntropyCompression(true), zstd.WithWindowSize(zstdWindow),
		zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	if want := fastest.EncodeAll(page, nil); !bytes.Equal(out, want) {
		t.Errorf("the default level did not use the fastest encoder: %d bytes, the fastest gives %d", len(out), len(want))
	}
	for _, level := range []int{1, 3, 7, 12} {
		out := c.EncodeLevel(nil, page, level)
		if back, err := compress.Decode(c, nil, out); err != nil || !bytes.Equal(back, page) {
			t.Fatalf("level %d: round trip failed: %v", level, err)
		}
		// The frame header's descriptor (after the 4-byte magic) has
		// Content_Checksum_flag at bit 2: no page is hashed.
		if len(out) < 5 || out[4]&0x04 != 0 {
			t.Errorf("level %d: the frame carries a content checksum", level)
		}
	}
}

// TestPageCompressionStepsAside: the codec yields after every page, so that
// on one processor a goroutine waiting to run gets a turn between any two
// pages arrow-go compresses inside one call. Without the yield the waiter
// runs only when the scheduler preempts the encoding, every 10 ms or more:
// a few turns for the pages here, which take tens of milliseconds.
func TestPageCompressionStepsAside(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	const pages = 256
	page := pageOfRows(16 << 10)
	counter := turns.Start()
	before := counter.Turns()
	var dst []byte
	for range pages {
		dst = c.EncodeLevel(dst[:0], page, compress.DefaultCompressionLevel)
	}
	got := counter.Turns() - before
	counter.Stop()
	if got < pages/2 {
		t.Errorf("the waiting goroutine ran %d times during %d page compressions, want at least %d", got, pages, pages/2)
	}
}
