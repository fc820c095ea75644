//go:build unix

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// scenarioResult is one line of a fault report.
type scenarioResult struct {
	name      string
	faults    int
	sent      int64 // entries handed to the clients and children
	acked     int64 // distinct entries acknowledged
	stored    int64 // rows of the scenario's sources in the tables
	missing   int64 // acknowledged entries not stored
	dupNative int64 // extra copies of native entries (must be 0)
	dupLegacy int64 // extra copies of legacy entries (only beyond the dedup window)
	recover   time.Duration
	peakKB    int64
}

// storedCounts indexes stored rows by source and entry sequence.
func storedCounts(rows []storedEntry) map[string]map[uint64]int {
	m := make(map[string]map[uint64]int)
	for _, r := range rows {
		if m[r.source] == nil {
			m[r.source] = make(map[uint64]int)
		}
		m[r.source][r.entry]++
	}
	return m
}

// add tallies a round's sources against the stored rows.
func (r *scenarioResult) add(l *load, stored map[string]map[uint64]int) {
	per := int64(l.cfg.batchSize)
	for _, s := range l.native {
		r.sent += s.next.Load() * per
		// A batch the client holds (until persisted) and resends after the
		// server lost it is acknowledged again: count entries once.
		acked := min(s.acked.Load(), s.next.Load()*per)
		r.acked += acked
		for q := uint64(1); q <= uint64(acked); q++ {
			if stored[s.id][q] == 0 {
				r.missing++
			}
		}
		for _, c := range stored[s.id] {
			r.stored += int64(c)
			r.dupNative += int64(c - 1)
		}
	}
	for _, s := range l.legacy {
		r.sent += s.sent.Load()
		st := s.child.Stats()
		r.acked += int64(len(st.AckedEntries))
		for q := range st.AckedEntries {
			if stored[s.id][q] == 0 {
				r.missing++
			}
		}
		for _, c := range stored[s.id] {
			r.stored += int64(c)
			r.dupLegacy += int64(c - 1)
		}
	}
}

// check fails the test for lost entries and native duplicates. Legacy
// duplicates fail it too: every resend in the harness is far inside the
// server's dedup window (5 min, 10,000 entries per source), so none is
// allowed.
func (r *scenarioResult) check(t *testing.T) {
	t.Helper()
	if r.missing != 0 {
		t.Errorf("%s: %d acknowledged entries missing from the tables", r.name, r.missing)
	}
	if r.dupNative != 0 {
		t.Errorf("%s: %d duplicate rows of native sources", r.name, r.dupNative)
	}
	if r.dupLegacy != 0 {
		t.Errorf("%s: %d duplicate rows of legacy children, all resent within the dedup window", r.name, r.dupLegacy)
	}
	if r.acked != r.sent {
		t.Errorf("%s: %d entries sent, %d acknowledged", r.name, r.sent, r.acked)
	}
}

// report formats results as a table.
func report(results []*scenarioResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %6s %9s %9s %9s %7s %7s %7s %9s %8s\n",
		"scenario", "faults", "sent", "acked", "stored", "missing", "dup(n)", "dup(l)", "recover", "peakRSS")
	for _, r := range results {
		fmt.Fprintf(&b, "%-22s %6d %9d %9d %9d %7d %7d %7d %9s %6dMB\n",
			r.name, r.faults, r.sent, r.acked, r.stored, r.missing, r.dupNative, r.dupLegacy,
			r.recover.Round(10*time.Millisecond), r.peakKB>>10)
	}
	return b.String()
}
