package coord_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// BenchmarkMarkCommitted is the cost of one commit's marks for 2,000
// sources: without entry ranges (batch-mode sources); with one new span per
// source that extends the row's one range (entry-mode sources whose entry
// sequences have no gaps: the fast path); and with a gap every third commit
// (rows holding up to 10 ranges: the general path). It logs the bytes of a
// row's committed_ranges. Run:
//
//	LAKEHOUSE_TEST_POSTGRES_DSN=... go test -run '^$' -bench MarkCommitted ./internal/coord
func BenchmarkMarkCommitted(b *testing.B) {
	dsn := pgtest.FreshDB(b, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	s, err := coord.Open(ctx, coord.Options{DSN: dsn, Owner: "inst-a", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const sources = 2000
	epochs := make([]uint64, sources)
	for i := range sources {
		l, err := s.Acquire(ctx, fmt.Sprintf("src-%04d", i), coord.Resume{})
		if err != nil {
			b.Fatal(err)
		}
		epochs[i] = l.Epoch
	}
	keep := coord.Window{Age: 5 * time.Minute, Entries: 10000}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, kind := range []string{"none", "contiguous", "gaps"} {
		b.Run("ranges="+kind, func(b *testing.B) {
			marks := make([]coord.Mark, sources)
			for n := 0; n < b.N; n++ {
				for i := range marks {
					seq := uint64(n + 1)
					marks[i] = coord.Mark{Source: fmt.Sprintf("src-%04d", i), Epoch: epochs[i], Seq: seq, Entry: seq * 100}
					switch kind {
					case "contiguous":
						marks[i].Ranges = []coord.EntryRange{{Lo: (seq-1)*100 + 1, Hi: seq * 100}}
					case "gaps":
						marks[i].Ranges = []coord.EntryRange{{Lo: (seq-1)*100 + 1 + uint64(n%3/2), Hi: seq * 100}}
					}
				}
				if _, err := s.MarkCommitted(ctx, marks, keep); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var avg, maxLen sql.NullFloat64
			if err := db.QueryRow(`SELECT avg(length(committed_ranges::text)), max(length(committed_ranges::text)) FROM lakehouse_source_leases`).Scan(&avg, &maxLen); err != nil {
				b.Fatal(err)
			}
			b.Logf("committed_ranges per row: %.0f bytes on average, %.0f at most", avg.Float64, maxLen.Float64)
			if _, err := db.Exec(`UPDATE lakehouse_source_leases SET committed_ranges = NULL`); err != nil {
				b.Fatal(err)
			}
		})
	}
}
