package server

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sourceRates limits each source's entries/s and bytes/s with two token
// buckets per source (golang.org/x/time/rate), each holding one second of
// its rate.
//
// A batch the buckets cannot pay for now is refused (rate_limited) with the
// delay after which it can be paid for, and its tokens are reserved for it
// at that time: a hold. The next batch of the source that arrives once the
// hold has matured (the resent batch: legacy children resend under a new
// number, so holds are not tied to a batch number) is paid from it. Without
// holds, every batch refused in one burst would be told the same delay, come
// back together and be refused again but one, and a legacy child, which
// gives up after 3 retries, would lose batches. With them, the refused
// batches are told successive delays, one rate's worth apart.
//
// Tokens are only ever handed out by the buckets, so the rate holds over any
// interval of a second or more, holds included. A hold not used within
// holdGrace of maturing is dropped (its capacity is lost, never exceeded).
//
// A stream's limit is its token's when the token has one (Limits.SourceRate),
// else the flags' (Limits.SourceRateEntries/Bytes).
type sourceRates struct {
	def rateLimit // the flags' limit

	mu      sync.Mutex
	sources map[string]*sourceRate
}

// rateLimit is a source's limit in entries/s and frame bytes/s; 0 for a
// dimension not limited.
type rateLimit struct{ entries, bytes float64 }

func (l rateLimit) none() bool { return l.entries == 0 && l.bytes == 0 }

type sourceRate struct {
	lim            rateLimit     // what the limiters were made for
	entries, bytes *rate.Limiter // nil for a dimension not limited
	holds          []hold
}

// newSourceRate makes the limiters of lim, each holding one second of its
// rate.
func newSourceRate(lim rateLimit) *sourceRate {
	burst := func(r float64) int { return int(min(max(math.Ceil(r), 1), math.MaxInt32)) }
	sr := &sourceRate{lim: lim}
	if lim.entries > 0 {
		sr.entries = rate.NewLimiter(rate.Limit(lim.entries), burst(lim.entries))
	}
	if lim.bytes > 0 {
		sr.bytes = rate.NewLimiter(rate.Limit(lim.bytes), burst(lim.bytes))
	}
	return sr
}

// hold is capacity reserved for a refused batch, usable from at.
type hold struct {
	at, expires time.Time
	entries     int
	bytes       int
}

const (
	// holdGrace is how long a matured hold waits for its batch.
	holdGrace = 5 * time.Second
	// maxHoldDelay: a batch that would wait longer holds nothing (a client
	// spamming refused batches cannot push its own source's debt further);
	// it is told the delay, and takes its chance then.
	maxHoldDelay = 10 * time.Second
	// maxHolds bounds the holds of a source; beyond it batches are refused
	// without one.
	maxHolds = 256
)

// newSourceRates returns nil when no stream can be limited: neither the
// flags' rates nor per-token rates (Limits.SourceRate).
func newSourceRates(l Limits) *sourceRates {
	def := rateLimit{l.SourceRateEntries, l.SourceRateBytes}
	if def.none() && l.SourceRate == nil {
		return nil
	}
	return &sourceRates{def: def, sources: make(map[string]*sourceRate)}
}

// streamLimit is the limit of a stream whose context is ctx: its token's
// when it has one, else the flags'.
func (r *sourceRates) streamLimit(ctx context.Context, l Limits) rateLimit {
	if r == nil {
		return rateLimit{}
	}
	if l.SourceRate != nil {
		if e, b := l.SourceRate(ctx); e > 0 || b > 0 {
			return rateLimit{e, b}
		}
	}
	return r.def
}

// admit charges a batch of n entries and size bytes to source id, written
// under limit lim, at now. It returns 0 when the batch may be accepted, or
// the delay after which it will be. Batches of one source are admitted one
// at a time (the caller holds the source's lock); r may be nil (no limits).
// A source written under another limit than before (another token) starts
// afresh under the new one.
func (r *sourceRates) admit(id string, lim rateLimit, n, size int, now time.Time) time.Duration {
	if r == nil || lim.none() {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sr := r.sources[id]
	if sr == nil || sr.lim != lim {
		sr = newSourceRate(lim)
		r.sources[id] = sr
	}
	if sr.entries == nil {
		n = 0
	}
	if sr.bytes == nil {
		size = 0
	}
	// Drop expired holds; sum the matured ones.
	kept := sr.holds[:0]
	var heldE, heldB int
	for _, h := range sr.holds {
		if now.After(h.expires) {
			continue
		}
		kept = append(kept, h)
		if !h.at.After(now) {
			heldE, heldB = heldE+h.entries, heldB+h.bytes
		}
	}
	clear(sr.holds[len(kept):])
	sr.holds = kept
	needE, needB := max(n-heldE, 0), max(size-heldB, 0)
	if needE == 0 && needB == 0 {
		sr.useHolds(n, size, now)
		return 0
	}
	if sr.available(needE, needB, now) {
		// The common case, without allocating reservations.
		if sr.entries != nil {
			sr.entries.AllowN(now, needE)
		}
		if sr.bytes != nil {
			sr.bytes.AllowN(now, needB)
		}
		sr.useHolds(min(n, heldE), min(size, heldB), now)
		return 0
	}
	res, delay := reserve(sr.entries, needE, now)
	resB, delayB := reserve(sr.bytes, needB, now)
	res = append(res, resB...)
	delay = max(delay, delayB)
	if delay <= 0 {
		sr.useHolds(min(n, heldE), min(size, heldB), now)
		return 0
	}
	if delay > maxHoldDelay || len(sr.holds) >= maxHolds {
		for i := len(res) - 1; i >= 0; i-- {
			res[i].CancelAt(now)
		}
		return delay
	}
	// Refused: the matured holds it would have used and the tokens just
	// reserved wait for it together, from when the reservation is due.
	sr.useHolds(min(n, heldE), min(size, heldB), now)
	at := now.Add(delay)
	sr.holds = append(sr.holds, hold{at: at, expires: at.Add(holdGrace), entries: n, bytes: size})
	return delay
}

// refund gives back what admit charged a batch that was then refused for
// another reason (buffer full): its next attempt is not charged again.
func (r *sourceRates) refund(id string, n, size int, now time.Time) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sr := r.sources[id]; sr != nil && len(sr.holds) < maxHolds {
		sr.holds = append(sr.holds, hold{at: now, expires: now.Add(holdGrace), entries: n, bytes: size})
	}
}

// available reports whether both buckets hold e entries and b bytes now
// (only the source's admit uses them, under sourceRates.mu).
func (sr *sourceRate) available(e, b int, now time.Time) bool {
	ok := func(l *rate.Limiter, n int) bool {
		return l == nil || n == 0 || (n <= l.Burst() && l.TokensAt(now) >= float64(n))
	}
	return ok(sr.entries, e) && ok(sr.bytes, b)
}

// useHolds takes e entries and b bytes out of the matured holds.
func (sr *sourceRate) useHolds(e, b int, now time.Time) {
	kept := sr.holds[:0]
	for _, h := range sr.holds {
		if !h.at.After(now) {
			de, db := min(e, h.entries), min(b, h.bytes)
			h.entries, h.bytes = h.entries-de, h.bytes-db
			e, b = e-de, b-db
			if h.entries == 0 && h.bytes == 0 {
				continue
			}
		}
		kept = append(kept, h)
	}
	clear(sr.holds[len(kept):])
	sr.holds = kept
}

// reserve reserves n tokens of l at now, in chunks of at most its burst (a
// batch may cost more than a second's worth: it then waits for the tokens
// the bucket's burst cannot hold at once). It returns the reservations and
// the delay until the last is due.
func reserve(l *rate.Limiter, n int, now time.Time) ([]*rate.Reservation, time.Duration) {
	if l == nil || n == 0 {
		return nil, 0
	}
	var res []*rate.Reservation
	var delay time.Duration
	for n > 0 {
		c := min(n, l.Burst())
		r := l.ReserveN(now, c) // c <= burst: always OK, possibly in the future
		res = append(res, r)
		delay = max(delay, r.DelayFrom(now))
		n -= c
	}
	return res, delay
}

// rateLimitedMsg is the nack message of a batch over its source's rate lim.
func (lim rateLimit) rateLimitedMsg() string {
	return fmt.Sprintf("source rate limit reached (%g entries/s, %g bytes/s; 0 is no limit): retry after the delay",
		lim.entries, lim.bytes)
}

// delayMs rounds a delay up to whole milliseconds, at least 1.
func delayMs(d time.Duration) uint32 {
	return uint32(min(max((d+time.Millisecond-1)/time.Millisecond, 1), math.MaxUint32))
}
