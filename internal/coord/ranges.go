package coord

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Entry-mode sources (legacy children) renumber resent batches, so their
// duplicates are found by entry sequence, in a window of recent entries
// (server.Config.DedupWindow and DedupEntries). A window lives in the
// instance's memory: a source that moves to another instance would start
// there with an empty one, and an entry committed by the old instance whose
// ack was lost would be stored twice when the child resends it. So the
// entry sequences committed recently travel with the lease row, as ranges
// in its committed_ranges column, merged and trimmed by MarkCommitted in
// the statement that records the mark, and read by Acquire. Only committed
// entries are recorded: an entry accepted and not committed by a dead
// instance must stay acceptable at its successor, or it would be lost.

// EntryRange is a span of entry sequences, Lo to Hi inclusive, committed
// for a source. A committed batch covers its entries' span.
type EntryRange struct {
	Lo, Hi uint64
	// AtMs is the latest commit that added to the range, in ms since the
	// Unix epoch by the database's clock. Set by MarkCommitted.
	AtMs int64
}

// Window bounds the committed ranges a lease row keeps, like the server's
// dedup window: ranges last committed more than Age ago are dropped, and at
// most Entries entry sequences are kept, the highest (newest) ones (none
// when Entries is 0).
type Window struct {
	Age     time.Duration
	Entries int
}

// MaxRanges is the most ranges a lease row keeps (the newest ones). A source
// whose entry sequences have no gaps holds one; one with gaps between its
// batches holds one per batch, which would make every mark rewrite, and
// every acquire read, up to DedupEntries ranges.
const MaxRanges = 32

// rangesColumnSQL adds the column to tables created before it.
const rangesColumnSQL = `ALTER TABLE %s ADD COLUMN IF NOT EXISTS committed_ranges jsonb`

// mergeRangesSQL is the committed_ranges of a lease row l after a mark m
// with new ranges m.ranges (JSON [[lo,hi],...], or empty for none), at c.now_ms
// (the database's clock), kept within $6 ms of age, $7 entries and $11
// ranges: the row's ranges and the new ones, stamped now, those older than
// the age dropped, overlapping or adjacent ones merged (stamped with the
// newest), and the highest $7 sequences in at most $11 ranges kept (the range
// that straddles the entry bound is cut).
// One scalar subquery per row, in the mark's own UPDATE.
//
// The usual case has a fast path: a source whose entry sequences have no
// gaps holds one range, which each commit's single span (m.lo, m.hi; lo above
// hi when the mark has several spans) extends. The general subquery cost
// about 0.09 ms per row (2,000 rows with 10 ranges each: 180 ms).
const mergeRangesSQL = `CASE WHEN m.ranges = '' THEN l.committed_ranges
WHEN $7::bigint > 0 AND m.lo <= m.hi AND (l.committed_ranges IS NULL OR (
	jsonb_array_length(l.committed_ranges) = 1
	AND (l.committed_ranges->0->>2)::bigint >= c.now_ms - $6::bigint
	AND m.lo BETWEEN (l.committed_ranges->0->>0)::bigint AND (l.committed_ranges->0->>1)::bigint + 1))
THEN jsonb_build_array(jsonb_build_array(
	GREATEST(COALESCE((l.committed_ranges->0->>0)::bigint, m.lo),
		GREATEST((l.committed_ranges->0->>1)::bigint, m.hi) - $7::bigint + 1),
	GREATEST((l.committed_ranges->0->>1)::bigint, m.hi), c.now_ms))
ELSE (
	SELECT jsonb_agg(jsonb_build_array(GREATEST(k.lo, k.hi - ($7::bigint - (k.cum - (k.hi - k.lo + 1))) + 1)::bigint, k.hi, k.t) ORDER BY k.lo)
	FROM (
		SELECT g.lo, g.hi, g.t, (sum(g.hi - g.lo + 1) OVER (ORDER BY g.hi DESC))::bigint AS cum,
			row_number() OVER (ORDER BY g.hi DESC) AS rn
		FROM (
			SELECT min(i.lo) AS lo, max(i.hi) AS hi, max(i.t) AS t
			FROM (
				SELECT p.lo, p.hi, p.t, sum(CASE WHEN p.lo <= p.prev_hi + 1 THEN 0 ELSE 1 END) OVER (ORDER BY p.lo, p.hi) AS grp
				FROM (
					SELECT a.lo, a.hi, a.t,
						max(a.hi) OVER (ORDER BY a.lo, a.hi ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_hi
					FROM (
						SELECT (e->>0)::bigint AS lo, (e->>1)::bigint AS hi, (e->>2)::bigint AS t
						FROM jsonb_array_elements(COALESCE(l.committed_ranges, '[]'::jsonb)) AS e
						UNION ALL
						SELECT (e->>0)::bigint, (e->>1)::bigint, c.now_ms
						FROM jsonb_array_elements(m.ranges::jsonb) AS e
					) AS a
					WHERE a.t >= c.now_ms - $6::bigint AND a.hi >= a.lo
				) AS p
			) AS i
			GROUP BY i.grp
		) AS g
	) AS k
	WHERE k.cum - (k.hi - k.lo + 1) < $7::bigint AND k.rn <= $11::bigint) END`

// encodeRanges is the JSON of a mark's new ranges ([[lo,hi],...]), or ""
// for none, and the span of the only one (lo > hi unless there is one: the
// fast path of mergeRangesSQL).
func encodeRanges(rs []EntryRange) (js string, lo, hi int64) {
	if len(rs) == 0 {
		return "", 1, 0
	}
	lo, hi = 1, 0
	if len(rs) == 1 {
		lo, hi = int64(rs[0].Lo), int64(rs[0].Hi)
	}
	pairs := make([][2]uint64, len(rs))
	for i, r := range rs {
		pairs[i] = [2]uint64{r.Lo, r.Hi}
	}
	b, _ := json.Marshal(pairs) // cannot fail: numbers only
	return string(b), lo, hi
}

// decodeRanges reads a lease row's committed_ranges ([[lo,hi,atMs],...]).
func decodeRanges(raw []byte) ([]EntryRange, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var triples [][3]int64
	if err := json.Unmarshal(raw, &triples); err != nil {
		return nil, fmt.Errorf("committed_ranges: %w", err)
	}
	out := make([]EntryRange, 0, len(triples))
	for _, t := range triples {
		if t[0] < 0 || t[1] < t[0] {
			return nil, fmt.Errorf("committed_ranges: bad range [%d, %d]", t[0], t[1])
		}
		out = append(out, EntryRange{Lo: uint64(t[0]), Hi: uint64(t[1]), AtMs: t[2]})
	}
	return out, nil
}

// MergeRanges returns rs sorted, with overlapping and adjacent ranges
// merged (AtMs the newest), and only the highest limit sequences in at most
// MaxRanges ranges kept: what MarkCommitted does in SQL, for ranges held in
// memory before they are recorded.
func MergeRanges(rs []EntryRange, limit int) []EntryRange {
	if len(rs) == 0 || limit <= 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b EntryRange) int {
		if a.Lo != b.Lo {
			if a.Lo < b.Lo {
				return -1
			}
			return 1
		}
		if a.Hi < b.Hi {
			return -1
		}
		if a.Hi > b.Hi {
			return 1
		}
		return 0
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Lo <= last.Hi || r.Lo == last.Hi+1 {
			last.Hi = max(last.Hi, r.Hi)
			last.AtMs = max(last.AtMs, r.AtMs)
			continue
		}
		out = append(out, r)
	}
	out = out[max(0, len(out)-MaxRanges):]
	// Keep the highest limit sequences.
	left := uint64(limit)
	for i := len(out) - 1; i >= 0; i-- {
		n := out[i].Hi - out[i].Lo + 1
		if n >= left {
			out[i].Lo = out[i].Hi - left + 1
			return out[i:]
		}
		left -= n
	}
	return out
}
