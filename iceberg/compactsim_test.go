package iceberg

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCompactionSustainedSim (LAKEHOUSE_COMPACT_SIM=<commits>) simulates a
// sustained load at 1/8 scale: a commit per stage of 24,000 users rows
// (about 32 KB of Parquet), a maintenance pass every 60
// commits (a minute of one-second stages), and the default small-file size
// and target at 1/8 (8 KiB and 16 MiB). It prints how often a row was
// rewritten and the compaction time. TestCompactionRewritesBoundedAtEveryRate
// simulates the planner alone, at full scale, in a fraction of a second.
func TestCompactionSustainedSim(t *testing.T) {
	commits, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_COMPACT_SIM"))
	if commits == 0 {
		t.Skip("set LAKEHOUSE_COMPACT_SIM=<commits> (600 is ten minutes)")
	}
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.TargetFileSizeBytes = DefaultTargetFileSizeBytes / 8
		c.Maintenance.CompactSmallFileBytes = DefaultCompactSmallFileBytes / 8
		c.Maintenance.SnapshotRetention = time.Millisecond
		c.Maintenance.MinSnapshots = 1
	})
	var rows, staged int64
	for i := 1; i <= commits; i++ {
		f := w1Flush(uint64(i), oneSource, uint64(i), 1, 24000)
		f.Tables = slices.DeleteFunc(f.Tables, func(t sink.Table) bool { return t.Name != "users" })
		res := mustCommit(t, s, f)
		rows += res.RowsWritten
		staged += res.BytesWritten
		if i%60 == 0 || i == commits {
			maintain(t, s, MaintainOptions{})
			tot := s.MaintenanceTotals()
			t.Logf("commit %d (%d B staged each): %d files; rows rewritten %.2f per row, bytes %.2f per staged byte, compaction %.1fs",
				i, staged/int64(i), len(liveFiles(t, s, "users")), float64(tot.RowsRewritten)/float64(rows),
				float64(tot.BytesRewritten)/float64(staged), tot.CompactionSeconds)
		}
	}
}
