package wal

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAppend200KB measures group-commit throughput with 200 KB records
// (the typical CDC batch) from many concurrent appenders. Run it with real
// fsync on the data disk, e.g.
//
//	go test -run '^$' -bench BenchmarkAppend200KB -benchtime 5s ./server/wal
//
// Each appender releases what it has appended every 32 records so the log
// stays under MaxBytes however long the benchmark runs, as the server would
// after its Iceberg commits.
func BenchmarkAppend200KB(b *testing.B) {
	for _, bc := range []struct {
		name        string
		noSync      bool
		parallelism int // goroutines per GOMAXPROCS
	}{
		{"fsync/p1", false, 1},
		{"fsync/p8", false, 8},
		{"fsync/p32", false, 32},
		{"nosync/p8", true, 8},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const size = 200 << 10
			l, err := Open(Options{Dir: b.TempDir(), NoSync: bc.noSync, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			rec := payload(1, size)
			b.SetBytes(size)
			b.SetParallelism(bc.parallelism)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				n := 0
				for pb.Next() {
					lsn, err := l.Append(ctx, rec)
					if err != nil {
						b.Error(err)
						return
					}
					if n++; n%32 == 0 {
						if err := l.Release(lsn); err != nil {
							b.Error(err)
							return
						}
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			st := l.Stats()
			b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "appends/fsync")
			b.ReportMetric(float64(st.Syncs)/elapsed.Seconds(), "fsyncs/s")
		})
	}
}
