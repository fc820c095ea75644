package iceberg

import (
	"context"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// mirrorBenchRows returns n winners of the keyed workload (realistic rows:
// strings with escapes, numbers, booleans, a struct, a list, timestamps).
func mirrorBenchRows(b *testing.B, n int) []*mirrorChange {
	g, err := workload.NewKeyed(workload.KeyedConfig{Seed: 1, Keys: 4 * n, BatchSize: n, Sources: 1, NoModel: true, Tables: []string{"t"}})
	if err != nil {
		b.Fatal(err)
	}
	var rows []*mirrorChange
	for len(rows) < n {
		for _, e := range g.Next().Entries {
			if e.Op != codec.OpDelete && len(rows) < n {
				rows = append(rows, &mirrorChange{key: string(e.RowID), source: "s", entry: e.Sequence, eventMs: e.Timestamp, op: e.Op, after: string(e.After)})
			}
		}
	}
	return rows
}

// BenchmarkMirrorRows measures the per-row CPU of a mirror commit outside
// Iceberg: building their Arrow record, decoding each row's JSON once, and
// planning the schema from the rows that did not fit (10,000 keyed rows,
// against the schema they evolved).
//
//	go test ./iceberg -run '^$' -bench MirrorRows -benchmem -cpuprofile /tmp/cpu.out
func BenchmarkMirrorRows(b *testing.B) {
	rows := mirrorBenchRows(b, 10_000)
	s := openTestSink(b, b.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorInferTimestamps = true })
	tbl, err := s.loadOrCreateMirror(context.Background(), "t", nil)
	if err != nil {
		b.Fatal(err)
	}
	var all []map[string]any
	dec := newAfterDecoder()
	for _, r := range rows {
		if m, ok := dec.parse(r.after); ok {
			all = append(all, m)
		}
	}
	if tbl, err = s.evolveMirrorSchema(context.Background(), tbl, MirrorTableSchema{}, all); err != nil {
		b.Fatal(err)
	}
	sc := tbl.Schema()
	var payload int64
	for _, r := range rows {
		payload += int64(len(r.after))
	}
	ty := mirrorTyping{timestamps: true}
	b.SetBytes(payload)
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		rec, extra, misfits, err := buildMirrorRecord(context.Background(), sc, rows, ty, MirrorTableSchema{})
		if err != nil {
			b.Fatal(err)
		}
		p := newSchemaPlan(sc, ty)
		for _, m := range misfits {
			p.observeRow(m)
		}
		if len(p.adds) != 0 {
			b.Fatalf("plan adds %d columns to the evolved schema", len(p.adds))
		}
		if extra > int64(len(rows))/20 {
			b.Fatalf("%d of %d rows in _extra", extra, len(rows))
		}
		rec.Release()
	}
	b.StopTimer()
	// CPU time is steadier than wall time on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(len(rows)*b.N), "cpu-µs/row")
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
