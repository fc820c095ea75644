package coord_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// spans strips the commit times.
func spans(rs []coord.EntryRange) [][2]uint64 {
	out := make([][2]uint64, len(rs))
	for i, r := range rs {
		out[i] = [2]uint64{r.Lo, r.Hi}
	}
	return out
}

func wantSpans(t *testing.T, what string, got []coord.EntryRange, want ...[2]uint64) {
	t.Helper()
	if g := spans(got); !slices.Equal(g, want) {
		t.Fatalf("%s: ranges %v, want %v", what, g, want)
	}
}

func rng(lo, hi uint64) coord.EntryRange { return coord.EntryRange{Lo: lo, Hi: hi} }

// rangesOf reads source's ranges as a new owner would (acquire), then
// releases the lease again.
func rangesOf(t *testing.T, s *coord.Store, source string) coord.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := s.Acquire(ctx, source, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, source, l.Epoch); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestCommittedRangesMergeAndTrim: the entry ranges recorded with committed
// marks are merged with what the lease row holds (adjacent and overlapping
// ones join), trimmed to the newest Entries sequences and to Age, kept across
// owners and epochs, untouched by a batch-mode mark or a mark of a source
// held elsewhere, and read by the next owner's acquire.
func TestCommittedRangesMergeAndTrim(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := open(t, dsn, "inst-a", 0)
	b := open(t, dsn, "inst-b", 0)
	keep := coord.Window{Age: time.Hour, Entries: 25}
	la, err := a.Acquire(ctx, "legacy", coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	mark := func(s *coord.Store, epoch uint64, entry uint64, k coord.Window, rs ...coord.EntryRange) {
		t.Helper()
		ok, err := s.MarkCommitted(ctx, []coord.Mark{{Source: "legacy", Epoch: epoch, Seq: entry, Entry: entry, Ranges: rs}}, k)
		if err != nil || !ok["legacy"] {
			t.Fatalf("mark: %v %v", ok, err)
		}
	}
	mark(a, la.Epoch, 10, keep, rng(1, 10))
	mark(a, la.Epoch, 20, keep, rng(11, 20))                         // adjacent: joins
	mark(a, la.Epoch, 40, keep, rng(30, 35), rng(36, 40))            // a gap, then two adjacent
	mark(a, la.Epoch, 40, coord.Window{Age: time.Hour, Entries: 25}) // batch mode: nothing
	if err := a.Release(ctx, "legacy", la.Epoch); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "legacy", coord.Resume{})
	if err != nil || lb.Epoch != la.Epoch+1 {
		t.Fatalf("takeover: %+v %v", lb, err)
	}
	// 25 sequences kept: 30..40 (11) and 7..20 (14), cut inside 1..20.
	wantSpans(t, "after a's marks", lb.Ranges, [2]uint64{7, 20}, [2]uint64{30, 40})
	if d := lb.NowMs - lb.Ranges[1].AtMs; d < 0 || d > time.Minute.Milliseconds() {
		t.Errorf("range committed %d ms before the acquire, want a moment", d)
	}
	// a's ranges are from an older epoch, still committed: b adds to them.
	mark(b, lb.Epoch, 45, keep, rng(41, 45))
	// a, fenced, records nothing.
	if ok, err := a.MarkCommitted(ctx, []coord.Mark{{Source: "legacy", Epoch: la.Epoch, Seq: 99, Entry: 99,
		Ranges: []coord.EntryRange{rng(90, 99)}}}, keep); err != nil || ok["legacy"] {
		t.Fatalf("mark of a source that moved: %v %v", ok, err)
	}
	if err := b.Release(ctx, "legacy", lb.Epoch); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "after b's mark", rangesOf(t, a, "legacy").Ranges, [2]uint64{12, 20}, [2]uint64{30, 45})

	// Age: ranges last committed longer ago than Age are dropped at the
	// next mark; a range that a newer commit extended counts as new.
	l, err := a.Acquire(ctx, "legacy", coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	short := coord.Window{Age: 200 * time.Millisecond, Entries: 1000}
	mark(a, l.Epoch, 50, short, rng(46, 50))
	if err := a.Release(ctx, "legacy", l.Epoch); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "after the age trim", rangesOf(t, b, "legacy").Ranges, [2]uint64{46, 50})
}

// TestCommittedRangesMatchMergeRanges: the SQL merge and trim agrees with
// MergeRanges (the server's in-memory one) over random marks: overlaps,
// gaps, adjacent spans, out-of-order spans and cuts at the entry bound, in
// the general path and in the fast path (one span extending one range: the
// even rounds, with an occasional gap or second span).
func TestCommittedRangesMatchMergeRanges(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	a := open(t, dsn, "inst-a", 0)
	r := rand.New(rand.NewPCG(1, 2))
	capped := false
	for round := range 8 {
		source := "s" + string(rune('a'+round))
		l, err := a.Acquire(ctx, source, coord.Resume{})
		if err != nil {
			t.Fatal(err)
		}
		keep := coord.Window{Age: time.Hour, Entries: 20 + r.IntN(200) + round/4*10000}
		var model []coord.EntryRange
		next := uint64(1)
		for range 40 {
			var rs []coord.EntryRange
			if round%2 == 0 {
				lo := next - min(next-1, uint64(r.IntN(3))) + uint64(r.IntN(8)/7)
				next = lo + uint64(r.IntN(30))
				rs = append(rs, rng(lo, next))
				next++
				if r.IntN(10) == 0 {
					rs = append(rs, rng(next+2, next+4))
				}
			} else {
				for range 1 + r.IntN(3) {
					lo := uint64(1 + r.IntN(500*(1+round/4*10)))
					rs = append(rs, rng(lo, lo+uint64(r.IntN(15))))
				}
			}
			if _, err := a.MarkCommitted(ctx, []coord.Mark{{Source: source, Epoch: l.Epoch, Seq: 1, Entry: 1, Ranges: rs}}, keep); err != nil {
				t.Fatal(err)
			}
			model = coord.MergeRanges(append(model, rs...), keep.Entries)
		}
		if err := a.Release(ctx, source, l.Epoch); err != nil {
			t.Fatal(err)
		}
		capped = capped || len(model) == coord.MaxRanges
		got := rangesOf(t, a, source).Ranges
		if g, w := spans(got), spans(model); !slices.Equal(g, w) {
			t.Fatalf("round %d (keep %d): SQL %v, MergeRanges %v", round, keep.Entries, g, w)
		}
	}
	if !capped {
		t.Error("no round reached MaxRanges ranges")
	}
}

// TestLeaseTableUpgrade: a lease table created before committed_ranges
// existed gets the column at Open, and its rows keep working.
func TestLeaseTableUpgrade(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE lakehouse_source_leases (
		source_id text PRIMARY KEY, owner text NOT NULL, addr text NOT NULL DEFAULT '', epoch bigint NOT NULL,
		expires_at timestamptz NOT NULL, committed_seq bigint, committed_entry bigint)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO lakehouse_source_leases VALUES ('old', 'inst-x', '', 3, now() - interval '1 hour', 7, 70)`); err != nil {
		t.Fatal(err)
	}
	a := open(t, dsn, "inst-a", 0)
	l, err := a.Acquire(ctx, "old", coord.Resume{})
	if err != nil || l.Epoch != 4 || l.CommittedSeq != 7 || len(l.Ranges) != 0 {
		t.Fatalf("acquire of a row from before the column: %+v %v", l, err)
	}
	if _, err := a.MarkCommitted(ctx, []coord.Mark{{Source: "old", Epoch: 4, Seq: 8, Entry: 75, Ranges: []coord.EntryRange{rng(71, 75)}}},
		coord.Window{Age: time.Hour, Entries: 100}); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "old", 4); err != nil {
		t.Fatal(err)
	}
	wantSpans(t, "after the upgrade", rangesOf(t, a, "old").Ranges, [2]uint64{71, 75})
}
