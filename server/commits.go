package server

import (
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// recentCommitsKept bounds the commits RecentCommits reports: enough for 15
// minutes of one-second commits to a few tables.
const recentCommitsKept = 4096

// CommitRecord is one table commit of a successful flush.
type CommitRecord struct {
	TimeMs     int64  `json:"time_ms"`                      // when the flush completed, ms since the Unix epoch
	Table      string `json:"table"`                        // the table in the sink ("" for a sink that does not commit per table)
	SnapshotID int64  `json:"snapshot_id,omitempty,string"` // the snapshot the commit created, when the sink reports it
	Rows       int64  `json:"rows"`                         // rows made visible
	DurationMs int64  `json:"duration_ms"`                  // the table commit (or, without per-table commits, the whole flush)
	Trigger    string `json:"trigger"`                      // what triggered the flush, e.g. "scheduled", "manual"
}

// recordCommitsLocked appends the commits of a successful flush to the
// recent-commit ring.
func (s *Server) recordCommitsLocked(now time.Time, trigger string, flushDur time.Duration, out sink.Result) {
	add := func(r CommitRecord) {
		if len(s.commits) == recentCommitsKept {
			copy(s.commits, s.commits[1:])
			s.commits = s.commits[:len(s.commits)-1]
		}
		s.commits = append(s.commits, r)
	}
	if len(out.Commits) == 0 {
		if out.RowsWritten > 0 {
			add(CommitRecord{TimeMs: now.UnixMilli(), Rows: out.RowsWritten, DurationMs: flushDur.Milliseconds(), Trigger: trigger})
		}
		return
	}
	for _, c := range out.Commits {
		add(CommitRecord{TimeMs: now.UnixMilli(), Table: c.Table, SnapshotID: c.SnapshotID, Rows: c.Rows,
			DurationMs: c.Duration.Milliseconds(), Trigger: trigger})
	}
}

// RecentCommits returns the table commits of the last successful flushes,
// oldest first (at most a few thousand).
func (s *Server) RecentCommits() []CommitRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CommitRecord(nil), s.commits...)
}
