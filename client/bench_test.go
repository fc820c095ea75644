package client

import (
	"context"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// BenchmarkClientW1 measures the client's own ceiling: W1 batches through
// the client to the in-test fake server (which decodes and acks at once).
func BenchmarkClientW1(b *testing.B) {
	for _, mode := range []Mode{ModeBinary, ModeStructured} {
		b.Run(mode.String(), func(b *testing.B) {
			f := startFake(b)
			entries := workload.Entries(0, workload.W1BatchSize)
			size := 0
			for i := range entries {
				size += entries[i].EncodedSize()
			}
			c := dialTest(b, f.Addr(), "bench", WithMode(mode))
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				if err := c.SendMany(context.Background(), entries); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*len(entries))/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
