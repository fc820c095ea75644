package codec_test

import (
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// Benchmarks on workload W1 (DESIGN.md): one 1000-entry batch, ~210 bytes per
// entry. Run with
//	go test -run='^$' -bench=. -benchmem -count=3 -cpu=1 ./codec
// Targets on one core: decode >= 1 GB/s, encode >= 500 MB/s.

func reportEntries(b *testing.B, entries int) {
	b.ReportMetric(float64(b.N)*float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkEncodeW1(b *testing.B) {
	batch := workload.Batch("src", 1)
	buf, err := codec.AppendBatch(nil, batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, err = codec.AppendBatch(buf[:0], batch)
		if err != nil {
			b.Fatal(err)
		}
	}
	reportEntries(b, len(batch.Entries))
}

func benchDecodeInto(b *testing.B, opts codec.DecodeOptions) {
	frame := w1Frame(b)
	var batch codec.Batch
	if err := codec.DecodeBatchInto(&batch, frame, opts); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := codec.DecodeBatchInto(&batch, frame, opts); err != nil {
			b.Fatal(err)
		}
	}
	reportEntries(b, len(batch.Entries))
}

// BenchmarkDecodeW1ZeroCopy: the default lenient options, which still
// compute the CRC (ChecksumOK), into a reused Batch.
func BenchmarkDecodeW1ZeroCopy(b *testing.B) { benchDecodeInto(b, codec.DecodeOptions{}) }

func BenchmarkDecodeW1NoChecksum(b *testing.B) {
	benchDecodeInto(b, codec.DecodeOptions{SkipChecksum: true})
}

func BenchmarkDecodeW1ValidateJSON(b *testing.B) {
	benchDecodeInto(b, codec.DecodeOptions{ValidateUTF8: true, ValidateJSON: true})
}

// BenchmarkDecodeW1Owned copies the frame and allocates the entries each time.
func BenchmarkDecodeW1Owned(b *testing.B) {
	frame := w1Frame(b)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		batch, err := codec.DecodeBatchOwned(frame, codec.DecodeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n = len(batch.Entries)
	}
	reportEntries(b, n)
}
