package iceberg

import (
	"context"
	"testing"
)

// TestResultCommits: a commit reports each table commit with the snapshot it
// created (what the status page's recent commits show), and a retried commit
// that writes nothing reports none.
func TestResultCommits(t *testing.T) {
	s := openTestSink(t, t.TempDir(), nil)
	f := w1Flush(1, testSources[:2], 1, 2, 40)
	res := mustCommit(t, s, f)
	if len(res.Commits) != res.Tables || res.Tables != 8 {
		t.Fatalf("%d commits for %d tables, want 8", len(res.Commits), res.Tables)
	}
	var rows int64
	for _, c := range res.Commits {
		tbl, err := s.LoadTable(context.Background(), c.Table)
		if err != nil {
			t.Fatal(err)
		}
		if snap := tbl.CurrentSnapshot(); snap == nil || snap.SnapshotID != c.SnapshotID {
			t.Errorf("table %s: reported snapshot %d, current %v", c.Table, c.SnapshotID, snap)
		}
		if c.Rows <= 0 || c.Duration <= 0 {
			t.Errorf("table %s: rows %d duration %v", c.Table, c.Rows, c.Duration)
		}
		rows += c.Rows
	}
	if rows != res.RowsWritten {
		t.Errorf("commits hold %d rows, the result %d", rows, res.RowsWritten)
	}
	if again := mustCommit(t, s, f); len(again.Commits) != 0 || again.RowsWritten != 0 {
		t.Errorf("retried commit reported %+v", again.Commits)
	}
}
