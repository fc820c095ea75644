package server

import (
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

func TestRecentCommits(t *testing.T) {
	s := &Server{}
	now := time.UnixMilli(1_700_000_000_000)
	s.recordCommitsLocked(now, "scheduled", time.Second, sink.Result{RowsWritten: 30, Commits: []sink.TableCommit{
		{Table: "users", SnapshotID: 11, Rows: 10, Duration: 5 * time.Millisecond},
		{Table: "orders", SnapshotID: 12, Rows: 20, Duration: 7 * time.Millisecond},
	}})
	// A sink without per-table commits: one record for the flush; a flush
	// that wrote nothing: none.
	s.recordCommitsLocked(now, "manual", 3*time.Second, sink.Result{RowsWritten: 5})
	s.recordCommitsLocked(now, "manual", time.Second, sink.Result{})
	got := s.RecentCommits()
	want := []CommitRecord{
		{TimeMs: now.UnixMilli(), Table: "users", SnapshotID: 11, Rows: 10, DurationMs: 5, Trigger: "scheduled"},
		{TimeMs: now.UnixMilli(), Table: "orders", SnapshotID: 12, Rows: 20, DurationMs: 7, Trigger: "scheduled"},
		{TimeMs: now.UnixMilli(), Rows: 5, DurationMs: 3000, Trigger: "manual"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// The ring keeps the newest recentCommitsKept records.
	for i := range recentCommitsKept {
		s.recordCommitsLocked(now, "scheduled", 0, sink.Result{Commits: []sink.TableCommit{{Table: "t", SnapshotID: int64(i + 100)}}})
	}
	got = s.RecentCommits()
	if len(got) != recentCommitsKept || got[0].SnapshotID != 100 || got[len(got)-1].SnapshotID != int64(recentCommitsKept+99) {
		t.Errorf("ring: %d records, first %d, last %d", len(got), got[0].SnapshotID, got[len(got)-1].SnapshotID)
	}
}
