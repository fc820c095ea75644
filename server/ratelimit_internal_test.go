package server

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestSourceRatesStaggerRefusedBatches: a burst of batches beyond the rate
// is told successive delays, one rate's worth apart, and each refused batch
// that comes back at its delay is admitted, so a legacy child (3 retries)
// loses none; the rate holds meanwhile.
func TestSourceRatesStaggerRefusedBatches(t *testing.T) {
	r := newSourceRates(Limits{SourceRateEntries: 1000})
	t0 := time.Unix(1_700_000_000, 0)
	if d := r.admit("a", r.def, 1000, 10, t0); d != 0 {
		t.Fatalf("first batch within the burst: delay %v", d)
	}
	var delays []time.Duration
	for range 4 {
		delays = append(delays, r.admit("a", r.def, 1000, 10, t0))
	}
	for i, d := range delays {
		if want := time.Duration(i+1) * time.Second; d != want {
			t.Fatalf("refused batch %d: delay %v, want %v (all delays %v)", i, d, want, delays)
		}
	}
	// Each comes back at its delay and is admitted, paid by its hold.
	for i, d := range delays {
		if got := r.admit("a", r.def, 1000, 10, t0.Add(d)); got != 0 {
			t.Fatalf("batch %d back at %v: refused again with %v", i, d, got)
		}
	}
	// The bucket is spent up to t0+4s: a new batch now waits a second more.
	if d := r.admit("a", r.def, 1000, 10, t0.Add(4*time.Second)); d != time.Second {
		t.Fatalf("new batch after the holds: delay %v, want 1s", d)
	}
	// Another source has its own buckets.
	if d := r.admit("b", r.def, 1000, 10, t0); d != 0 {
		t.Fatalf("other source: delay %v", d)
	}
}

// TestSourceRatesNeverExceedTheRate drives a source far beyond its rate, in
// batches larger than the bucket (chunked reservations), with resends at the
// told delay and new batches mixed in: what is admitted over the run stays
// within rate*T plus one burst and the holds' grace.
func TestSourceRatesNeverExceedTheRate(t *testing.T) {
	const entriesPerSec, bytesPerSec = 500, 20_000
	r := newSourceRates(Limits{SourceRateEntries: entriesPerSec, SourceRateBytes: bytesPerSec})
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	admittedE, admittedB, refused := 0, 0, 0
	type batch struct {
		at      time.Time
		n, size int
	}
	var retries []batch // refused batches, resent at their delay
	for step := 0; step < 20_000; step++ {
		now = now.Add(3 * time.Millisecond)
		b := batch{n: 50 + step%700, size: 1000 + step%9000} // up to 1.4x the entry burst
		if len(retries) > 0 && !now.Before(retries[0].at) {
			b, retries = retries[0], retries[1:]
		} else if len(retries) > 20 {
			continue // a client bounds what it has in flight
		}
		d := r.admit("s", r.def, b.n, b.size, now)
		switch {
		case d == 0:
			admittedE, admittedB = admittedE+b.n, admittedB+b.size
		case d < 0:
			t.Fatalf("negative delay %v", d)
		default:
			refused++
			b.at = now.Add(d)
			i := len(retries)
			for i > 0 && retries[i-1].at.After(b.at) {
				i--
			}
			retries = slices.Insert(retries, i, b)
		}
	}
	secs := now.Sub(t0).Seconds()
	if max := entriesPerSec*(secs+1) + 1; float64(admittedE) > max {
		t.Fatalf("admitted %d entries in %.0fs, more than %v", admittedE, secs, max)
	}
	if max := bytesPerSec*(secs+1) + 1; float64(admittedB) > max {
		t.Fatalf("admitted %d bytes in %.0fs, more than %v", admittedB, secs, max)
	}
	// Every batch over the rate is retried, so the source keeps its rate.
	if float64(admittedE) < entriesPerSec*secs*0.7 && float64(admittedB) < bytesPerSec*secs*0.7 {
		t.Fatalf("admitted only %d entries, %d bytes in %.0fs (%d refusals): the source starves", admittedE, admittedB, secs, refused)
	}
	t.Logf("%.0fs: %d entries (%.0f/s), %d bytes (%.0f/s), %d refusals", secs, admittedE, float64(admittedE)/secs, admittedB, float64(admittedB)/secs, refused)
}

// TestSourceRatesRefund: a batch admitted and then refused for another
// reason (buffer full) is not charged again when resent.
func TestSourceRatesRefund(t *testing.T) {
	r := newSourceRates(Limits{SourceRateBytes: 1000})
	t0 := time.Unix(1_700_000_000, 0)
	if d := r.admit("a", r.def, 1, 1000, t0); d != 0 {
		t.Fatal(d)
	}
	r.refund("a", 1, 1000, t0)
	if d := r.admit("a", r.def, 1, 1000, t0.Add(time.Millisecond)); d != 0 {
		t.Fatalf("refunded batch charged again: delay %v", d)
	}
	var nilRates *sourceRates // limits off
	if d := nilRates.admit("a", rateLimit{1, 1}, 1<<20, 1<<30, t0); d != 0 {
		t.Fatal(d)
	}
}

// BenchmarkSourceRatesAdmit is the cost of the rate check per batch, with a
// limit that never triggers and with none (nil: the check is a nil test).
func BenchmarkSourceRatesAdmit(b *testing.B) {
	now := time.Unix(1_700_000_000, 0)
	for _, bc := range []struct {
		name string
		r    *sourceRates
	}{
		{"off", newSourceRates(Limits{})},
		{"high", newSourceRates(Limits{SourceRateEntries: 1e12, SourceRateBytes: 1e15})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lim := bc.r.streamLimit(context.Background(), Limits{})
			for i := 0; b.Loop(); i++ {
				if d := bc.r.admit("source-3", lim, 1000, 210_000, now.Add(time.Duration(i)*time.Millisecond)); d != 0 {
					b.Fatal(d)
				}
			}
		})
	}
}

// TestStreamLimitFromToken: a stream whose token has a rate limit is limited
// by it instead of the flags' limit, and a stream without one by the flags'.
func TestStreamLimitFromToken(t *testing.T) {
	type tokenKey struct{}
	l := Limits{SourceRateEntries: 1000, SourceRate: func(ctx context.Context) (float64, float64) {
		e, _ := ctx.Value(tokenKey{}).(float64)
		return e, 0
	}}
	r := newSourceRates(l)
	token := r.streamLimit(context.WithValue(context.Background(), tokenKey{}, 10.0), l)
	plain := r.streamLimit(context.Background(), l)
	if token != (rateLimit{10, 0}) || plain != (rateLimit{1000, 0}) {
		t.Fatalf("limits: token %+v, plain %+v", token, plain)
	}
	t0 := time.Unix(1_700_000_000, 0)
	if d := r.admit("a", token, 10, 1, t0); d != 0 {
		t.Fatalf("first second of the token's rate refused: %v", d)
	}
	if d := r.admit("a", token, 10, 1, t0); d != time.Second {
		t.Fatalf("beyond the token's 10 entries/s: delay %v, want 1s", d)
	}
	// The flags' limit alone would have taken it.
	if d := r.admit("b", plain, 20, 1, t0); d != 0 {
		t.Fatalf("flags' limit: %v", d)
	}
	// Only per-token limits configured: sources of tokens without one are
	// not limited.
	l2 := Limits{SourceRate: func(context.Context) (float64, float64) { return 0, 0 }}
	r2 := newSourceRates(l2)
	if r2 == nil {
		t.Fatal("per-token limits need the rate state")
	}
	if d := r2.admit("c", r2.streamLimit(context.Background(), l2), 1<<20, 1<<30, t0); d != 0 {
		t.Fatalf("unlimited stream refused: %v", d)
	}
}
