package server

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// TestUnrecordedMarks: the marks a restart records are those of sources
// committed here under a lease epoch whose mark was behind, or whose entry
// ranges were not recorded; ranges saved longer ago than the dedup window
// are left out, so that the lease row does not stamp old entries afresh.
func TestUnrecordedMarks(t *testing.T) {
	const window = 5 * time.Minute
	saved := int64(1_000_000)
	st := &savedState{SavedMs: saved, Sources: map[string]*savedSource{
		"uncoordinated": {LastSeq: 9},                                        // no epoch: no lease row
		"recorded":      {LastSeq: 9, MarkedSeq: 9, Epoch: 2},                // nothing missing
		"behind":        {LastSeq: 9, LastEntry: 90, MarkedSeq: 7, Epoch: 2}, // the mark lags
		"ranges":        {LastSeq: 9, MarkedSeq: 9, Epoch: 3, Unmarked: [][2]uint64{{81, 90}}},
		"both":          {LastSeq: 9, MarkedSeq: 8, Epoch: 4, Unmarked: [][2]uint64{{1, 5}, {81, 90}}},
	}}
	byID := func(ms []coord.Mark) map[string]coord.Mark {
		out := make(map[string]coord.Mark)
		for _, m := range ms {
			out[m.Source] = m
		}
		return out
	}

	got := byID(st.unrecordedMarks(saved+1000, window))
	ids := slices.Sorted(maps.Keys(got))
	if !slices.Equal(ids, []string{"behind", "both", "ranges"}) {
		t.Fatalf("fresh state: marks for %v, want behind, both, ranges", ids)
	}
	if m := got["behind"]; m.Epoch != 2 || m.Seq != 9 || m.Entry != 90 || len(m.Ranges) != 0 {
		t.Errorf("behind: %+v", m)
	}
	if m := got["both"]; m.Epoch != 4 || len(m.Ranges) != 2 || m.Ranges[1] != (coord.EntryRange{Lo: 81, Hi: 90}) {
		t.Errorf("both: %+v", m)
	}

	got = byID(st.unrecordedMarks(saved+window.Milliseconds(), window))
	if _, ok := got["ranges"]; ok || len(got) != 2 {
		t.Fatalf("state older than the window: marks %v, want behind and both without ranges", got)
	}
	if m := got["both"]; len(m.Ranges) != 0 || m.Seq != 9 {
		t.Errorf("both, old state: %+v", m)
	}
}
