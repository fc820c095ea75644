package iceberg

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

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

// TestPlanWaitsForAFullMerge: in a partition receiving rows (it has staged
// files), a tier whose files would merge into a file below 3/4 of the
// target, and could reach it with at most the group size, waits for it; one
// that cannot, or that is there, is merged. In a partition that receives
// no more, nothing waits.
func TestPlanWaitsForAFullMerge(t *testing.T) {
	m, err := MaintenanceConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Maintenance: m, TargetFileSizeBytes: DefaultTargetFileSizeBytes}}
	target := s.cfg.TargetFileSizeBytes
	files := func(n int, size int64) []table.FileScanTask {
		var out []table.FileScanTask
		for i := range n {
			b, err := iceberg.NewDataFileBuilder(*iceberg.UnpartitionedSpec, iceberg.EntryContentData,
				fmt.Sprintf("f%d-%d.parquet", size, i), iceberg.ParquetFile, nil, nil, nil, 1, size)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, table.FileScanTask{File: b.Build()})
		}
		return out
	}
	staged := files(3, 100<<10) // fewer than CompactMinFiles: not merged
	for _, c := range []struct {
		n         int
		size      int64
		receiving bool
		groups    []int
	}{
		{15, 6 << 20, true, nil},        // 90 MB: 16 files would make 96 MB
		{16, 6 << 20, true, []int{16}},  // 96 MB: 3/4 of the target
		{12, 1 << 20, true, []int{12}},  // 24 would make 24 MB: merged now
		{12, 10 << 20, true, []int{12}}, // 120 MB
		{15, 6 << 20, false, []int{15}}, // no more rows coming
	} {
		tasks := files(c.n, c.size)
		if c.receiving {
			tasks = append(tasks, staged...)
		}
		var got []int
		for _, g := range s.planCompaction(tasks, target) {
			got = append(got, len(g))
		}
		if !slices.Equal(got, c.groups) {
			t.Errorf("%d files of %d MB (receiving rows: %v): groups %v, want %v", c.n, c.size>>20, c.receiving, got, c.groups)
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

// TestCompactionRewritesBoundedAtEveryRate runs the planner alone over ten
// hours of one partition, a maintenance pass a minute, at the stage file
// sizes of several ingest rates, with the default settings: a byte is
// rewritten about log_F(3/4 target / stage file size) times at every rate.
// With small files up to 8 MiB all in one tier, a table's remainder below
// 8 MiB was merged again with every few new files: at 100 entries/s (two
// files of 20 KB a minute) each byte was rewritten 26 times.
func TestCompactionRewritesBoundedAtEveryRate(t *testing.T) {
	m, err := MaintenanceConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Maintenance: m, TargetFileSizeBytes: DefaultTargetFileSizeBytes}}
	fanIn := float64(m.CompactMinFiles)
	for _, c := range []struct {
		name    string
		perPass int   // files staged per pass (a minute)
		size    int64 // bytes per staged file
	}{
		{"W1 at saturation: a stage a second", 60, 160 << 10},
		{"5,000 entries/s", 60, 35 << 10},
		{"1,000 entries/s: a stage per 10,000 entries", 6, 10 << 10},
		{"100 entries/s: a commit per 30 s", 2, 20 << 10},
		{"a file of 1 KB every 30 s", 2, 1 << 10},
		{"2 MB files", 60, 2 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			amp, most := simulateCompaction(t, s, c.perPass, c.size, 600)
			limit := math.Log(float64(DefaultTargetFileSizeBytes*3/4)/float64(c.size))/math.Log(fanIn) + 1
			t.Logf("rewritten %.2f times per staged byte (limit %.2f); at most %d files below the target", amp, limit, most)
			if amp > limit {
				t.Errorf("each staged byte rewritten %.2f times, want at most %.2f", amp, limit)
			}
			if most > 8*m.CompactMinFiles+c.perPass {
				t.Errorf("up to %d files below the target size", most)
			}
		})
	}
}

// TestCompactionRewritesFewerAtSustainedLoad runs the planner with the
// defaults over 12 hours of one partition (a day until the tests had to be
// quicker: the figures are within 0.1), a maintenance pass a minute and a
// stage file a second, at stage file sizes from 20 KB to 1 MB (W1 stages
// files of about 100 KB per table at 100,000 entries/s, 140 KB at
// 150,000). Merging every small file a pass finds at once
// (compactMaxSmallInputs), with tiers of 12, rewrites each staged byte 2.6
// times on average over those sizes and 2 times at 140 KB; F = 8 with
// groups of 16 rewrote it 3.5 and 3 times. A tier that waits for a merge
// reaching the target (waitForFullMerge) took 80-100 KB from 3 to 2.
func TestCompactionRewritesFewerAtSustainedLoad(t *testing.T) {
	m, err := MaintenanceConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{cfg: Config{Maintenance: m, TargetFileSizeBytes: DefaultTargetFileSizeBytes}}
	var sum float64
	sizes := []int64{20 << 10, 35 << 10, 60 << 10, 80 << 10, 100 << 10, 140 << 10, 200 << 10, 280 << 10, 500 << 10, 1 << 20}
	for _, size := range sizes {
		amp, most := simulateCompaction(t, s, 60, size, 12*60)
		t.Logf("stage files of %d KB: each staged byte rewritten %.2f times; at most %d files below the target", size>>10, amp, most)
		sum += amp
		// W1 at 100,000 entries/s stages users files of about 100 KB: 3
		// rewrites before a tier waited for a merge that reaches the
		// target (waitForFullMerge).
		if (size == 100<<10 || size == 140<<10) && amp > 2.5 {
			t.Errorf("stage files of %d KB: each staged byte rewritten %.2f times, want at most 2.5", size>>10, amp)
		}
	}
	if mean := sum / float64(len(sizes)); mean > 2.8 {
		t.Errorf("each staged byte rewritten %.2f times on average, want at most 2.8", mean)
	}
}

// simulateCompaction feeds perPass files of size bytes to the planner per
// pass, replaces each planned group by its merge (the sum of its inputs, in
// files of at most the target size), and returns the bytes rewritten per
// byte staged and the most files below 3/4 of the target after a pass.
func simulateCompaction(t *testing.T, s *Sink, perPass int, size int64, passes int) (float64, int) {
	t.Helper()
	target := s.cfg.TargetFileSizeBytes
	var (
		files             []table.FileScanTask
		staged, rewritten int64
		most, n           int
	)
	add := func(size int64) {
		n++
		b, err := iceberg.NewDataFileBuilder(*iceberg.UnpartitionedSpec, iceberg.EntryContentData,
			fmt.Sprintf("f%d.parquet", n), iceberg.ParquetFile, nil, nil, nil, 1, size)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, table.FileScanTask{File: b.Build()})
	}
	for range passes {
		for range perPass {
			add(size)
			staged += size
		}
		gone := make(map[string]bool)
		for _, g := range s.planCompaction(files, target) {
			var sum int64
			for _, f := range g {
				sum += f.File.FileSizeBytes()
				gone[f.File.FilePath()] = true
			}
			rewritten += sum
			for ; sum > 0; sum -= min(sum, target) {
				add(min(sum, target))
			}
		}
		// Files at 3/4 of the target are never planned again: dropped
		// here, they do not slow down the passes of a simulated day.
		files = slices.DeleteFunc(files, func(f table.FileScanTask) bool {
			return gone[f.File.FilePath()] || f.File.FileSizeBytes() >= target*3/4
		})
		most = max(most, len(files))
	}
	return float64(rewritten) / float64(staged), most
}
