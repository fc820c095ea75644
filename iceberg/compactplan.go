package iceberg

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/apache/iceberg-go/table"
)

// Compaction is size-tiered, so that a row is rewritten a bounded number of
// times however long ingest runs. A file's tier is 0 below
// CompactSmallFileBytes, and 1 + floor(log_F(size/small)) above it, F being
// CompactMinFiles. A merge takes at least F files of one tier of one
// partition, so its output is at least F times the tier's lower bound: it
// lands at least one tier higher (tier 0 aside, whose files can be merged
// again until they reach the small size). A row is thus rewritten about
// log_F(target/stage file size) times.
//
// The staged files of tiers 0 and 1 are merged up to compactMaxSmallInputs
// at a time: a maintenance pass (a minute) finds one stage file per second
// per partition at sustained load, and merging them all at once lands the
// output a tier higher than merging F at a time would. With F = 12 as well,
// a planner simulation of 24 hours of one partition at W1's sustained rate
// (TestCompactionRewritesFewerAtSustainedLoad, 12 hours since) rewrites
// each staged byte of 140-KB stage files 2 times where F = 8 and groups of
// 16 rewrote it 3 times; averaged over stage files of 20 KB to 1 MB, 2.6
// times instead of 3.5 (2.4 since waitForFullMerge).
//
// The tiers before this one merged every small file (below 8 MiB) into files
// of 16 MiB until none was left: at sustained load, with stage files of
// about 65 KB, the remainder of each pass stayed small and was merged again
// at the next one. 10 minutes at full load rewrote every byte N times over,
// and compaction ran 555 of 600 s. Files at 3/4 of the target size or above
// are never rewritten.

// compactTier returns the size tier of a file of size bytes.
func compactTier(size, small int64, fanIn int) int {
	if size < small {
		return 0
	}
	t := 1
	for b := small; b <= math.MaxInt64/int64(fanIn); t++ {
		b *= int64(fanIn)
		if size < b {
			break
		}
	}
	return t
}

// planCompaction groups the files of tasks to merge: per partition and
// size tier, the tier's files once there are at least CompactMinFiles of
// them (and, in a partition receiving rows, where a merge would fall
// short of 3/4 of target, enough to reach it if a group's worth can:
// waitForFullMerge), in groups of at most max(compactMaxInputs,
// 2*CompactMinFiles) files of similar size (compactMaxSmallInputs in tiers
// 0 and 1), each group at least CompactMinFiles. Files at or above 3/4 of
// target, and files with deletes (changelog tables have none), are left
// alone.
func (s *Sink) planCompaction(tasks []table.FileScanTask, target int64) [][]table.FileScanTask {
	m := s.cfg.Maintenance
	fanIn := m.CompactMinFiles
	type bucketKey struct {
		partition string
		tier      int
	}
	buckets := make(map[bucketKey][]table.FileScanTask)
	// A partition with files of the two lowest tiers (staged files, or
	// their merges) is receiving rows.
	receiving := make(map[string]bool)
	var order []bucketKey
	seen := make(map[string]bool)
	for _, t := range tasks {
		f := t.File
		if seen[f.FilePath()] || f.FileSizeBytes() >= target*3/4 ||
			len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 {
			continue
		}
		seen[f.FilePath()] = true
		// fmt prints a map's keys sorted: one key per partition value.
		k := bucketKey{fmt.Sprint(f.SpecID(), f.Partition()), compactTier(f.FileSizeBytes(), m.CompactSmallFileBytes, fanIn)}
		if _, ok := buckets[k]; !ok {
			order = append(order, k)
		}
		buckets[k] = append(buckets[k], t)
		if k.tier <= 1 {
			receiving[k.partition] = true
		}
	}
	var groups [][]table.FileScanTask
	for _, k := range order {
		files := buckets[k]
		if len(files) < fanIn {
			continue
		}
		slices.SortStableFunc(files, func(a, b table.FileScanTask) int {
			return cmp.Or(cmp.Compare(a.File.FileSizeBytes(), b.File.FileSizeBytes()), cmp.Compare(a.File.FilePath(), b.File.FilePath()))
		})
		// n files in g groups of n/g or n/g+1 files: with maxIn >=
		// 2*fanIn, each has at least fanIn.
		maxIn := max(compactMaxInputs, 2*fanIn)
		if k.tier <= 1 {
			maxIn = max(compactMaxSmallInputs, maxIn)
		}
		if k.tier > 1 && receiving[k.partition] && waitForFullMerge(files, maxIn, target) {
			continue
		}
		n := len(files)
		g := (n + maxIn - 1) / maxIn
		for i := range g {
			groups = append(groups, files[i*n/g:(i+1)*n/g])
		}
	}
	return groups
}

// waitForFullMerge reports whether a tier's files (at least
// CompactMinFiles of them) should wait for more before they are merged:
// merged now, they would make a file below 3/4 of the target, which is
// merged once more later, while at most maxIn of them, once there, make a
// file at 3/4 of the target or above, which is never rewritten. At W1's
// sustained rate a pass merges a minute of staged files into about 6 MB;
// 12 of those made 72 MB, which was merged again with 11 others hours
// later: each row rewritten 3 times, against 2 when 16 are merged at once
// (the planner's simulation, TestCompactionRewritesFewerAtSustainedLoad).
// Only a partition receiving rows waits: in one that stopped (yesterday's,
// with day partitions), the files would wait for good.
func waitForFullMerge(files []table.FileScanTask, maxIn int, target int64) bool {
	var total int64
	for _, f := range files {
		total += f.File.FileSizeBytes()
	}
	full := target * 3 / 4
	if total >= full {
		return false
	}
	// The largest maxIn files of the tier, were there that many.
	mean := total / int64(len(files))
	return mean*int64(maxIn) >= full
}
