package iceberg

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

func TestCompactTier(t *testing.T) {
	for _, c := range []struct {
		size, small int64
		fanIn, want int
	}{
		{0, 8 << 20, 8, 0},
		{8<<20 - 1, 8 << 20, 8, 0},
		{8 << 20, 8 << 20, 8, 1},
		{64<<20 - 1, 8 << 20, 8, 1},
		{64 << 20, 8 << 20, 8, 2},
		{1 << 40, 1, 2, 41},
		{math.MaxInt64, 1 << 20, 8, 15}, // no overflow loop
	} {
		if got := compactTier(c.size, c.small, c.fanIn); got != c.want {
			t.Errorf("compactTier(%d, %d, %d) = %d, want %d", c.size, c.small, c.fanIn, got, c.want)
		}
	}
}

// TestCompactionWriteAmplification runs maintenance after every commit, as
// a sustained load does (a pass per minute, a stage per second), and checks
// that a row is rewritten a logarithmic number of times. The tiers before
// merged every file under the small size (or, once none was, every file
// under 3/4 of the target) whenever CompactMinFiles of them gathered: each
// pass rewrote everything written so far, here each row about 5 times.
func TestCompactionWriteAmplification(t *testing.T) {
	const (
		commits = 32
		fanIn   = 4
	)
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.CompactMinFiles = fanIn
		c.Maintenance.CompactSmallFileBytes = 1 << 10 // every staged file is above it
	})
	var (
		fs           []*sink.Flush
		rows, staged int64
	)
	maxFiles := 0
	for i := 1; i <= commits; i++ {
		f := w1Flush(uint64(i), oneSource, uint64(i), 1, 2000)
		f.Tables = slices.DeleteFunc(f.Tables, func(t sink.Table) bool { return t.Name != "users" })
		res := mustCommit(t, s, f)
		rows += res.RowsWritten
		staged += res.BytesWritten
		fs = append(fs, f)
		maintain(t, s, MaintainOptions{})
		maxFiles = max(maxFiles, len(liveFiles(t, s, "users")))
	}
	tot := s.MaintenanceTotals()
	if tot.BytesStaged != staged {
		t.Errorf("BytesStaged %d, want the %d bytes the commits wrote", tot.BytesStaged, staged)
	}
	amp := float64(tot.RowsRewritten) / float64(rows)
	// log_4(32) = 2.5 tiers to climb.
	limit := math.Log(commits)/math.Log(fanIn) + 1
	t.Logf("rewritten %d rows for %d (%.2f each, limit %.2f), %d bytes for %d staged; at most %d files; %v compacting",
		tot.RowsRewritten, rows, amp, limit, tot.BytesRewritten, staged, maxFiles,
		time.Duration(tot.CompactionSeconds*float64(time.Second)))
	if amp > limit {
		t.Errorf("compaction rewrote each row %.2f times, want at most %.2f", amp, limit)
	}
	if tot.CompactionRuns == 0 || tot.CompactionSeconds <= 0 {
		t.Errorf("totals %+v", tot)
	}
	// The file count stays bounded: fewer than fanIn files per tier.
	if maxFiles > 3*fanIn {
		t.Errorf("users had up to %d files", maxFiles)
	}
	for _, p := range liveFiles(t, s, "users") {
		checkSortedFile(t, p)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
}

// TestCompactionMergesRuns merges files whose runs are long (passed on as
// slices of the input batches) and short (copied row by row), interleaved
// over three sources: the output is sorted and holds every row once.
func TestCompactionMergesRuns(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	var fs []*sink.Flush
	for i := 1; i <= 4; i++ {
		per := int64(3)
		if i%2 == 0 {
			per = 700 // with W1's 8 tables, runs of about 90 rows per source
		}
		f := w1Flush(uint64(i), testSources, uint64(i), 1, per)
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	maintain(t, s, MaintainOptions{})
	files := liveFiles(t, s, "users")
	if len(files) >= 4 {
		t.Fatalf("users still has %d files", len(files))
	}
	for _, p := range files {
		checkSortedFile(t, p)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
	sameMultiset(t, "parquet-go read after compaction", flushParquetKeys(fs...), parquetKeys(t, s))
}
