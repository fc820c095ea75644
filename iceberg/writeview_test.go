package iceberg

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	iceberggo "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCompactionKeepsEachFilesPartition: a merge of one partition's files
// writes through an unpartitioned view (onePartition), so its outputs must
// be given back their spec, partition value, directory and sort order.
// Rows of two days, so that each commit writes a file per day; each day's
// files merge into one file that a scan of that day plans, and no other.
func TestCompactionKeepsEachFilesPartition(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	var fs []*sink.Flush
	for i := 1; i <= 4; i++ {
		f := w1Flush(uint64(i), testSources, uint64(i), 1, 200)
		for ti := range f.Tables {
			for ri := range f.Tables[ti].Rows {
				if ri%2 == 1 {
					f.Tables[ti].Rows[ri].Entry.Timestamp += 86_400_000 // a day later
				}
			}
		}
		mustCommit(t, s, f)
		fs = append(fs, f)
	}
	_, before := tableTasks(t, s, "users")
	dirs := make(map[string]string) // partition -> the directory of its files
	for _, task := range before {
		dirs[fmt.Sprint(task.File.Partition())] = fileDir(task.File.FilePath())
	}
	if len(before) != 8 || len(dirs) != 2 {
		t.Fatalf("%d files in %d partitions before compaction, want 8 in 2", len(before), len(dirs))
	}
	for part, dir := range dirs {
		if !strings.Contains(dir, "/event_time_day=") {
			t.Fatalf("partition %s is written in %s", part, dir)
		}
	}
	res, err := s.compactTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if res.groups != 2 || res.filesRemoved != 8 || res.filesAdded != 2 {
		t.Fatalf("compaction %+v, want 2 groups of 4 files into 2", res)
	}
	tbl, after := tableTasks(t, s, "users")
	for _, task := range after {
		df := task.File
		part := fmt.Sprint(df.Partition())
		if int(df.SpecID()) != tbl.Metadata().DefaultPartitionSpec() {
			t.Errorf("%s: spec %d, want the table's %d", df.FilePath(), df.SpecID(), tbl.Metadata().DefaultPartitionSpec())
		}
		if dir, ok := dirs[part]; !ok || fileDir(df.FilePath()) != dir {
			t.Errorf("%s: partition %s, not in its partition's directory %s", df.FilePath(), part, dir)
		}
		if id := df.SortOrderID(); id == nil || *id != tbl.Metadata().DefaultSortOrder() {
			t.Errorf("%s: sort order %v, want the table's", df.FilePath(), id)
		}
		delete(dirs, part)
	}
	if len(dirs) != 0 {
		t.Errorf("no file left in partitions %v", dirs)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
	// Partition pruning on the rebuilt entries: each day plans its file.
	for _, day := range [][2]string{{"2023-11-14T00:00:00+00:00", "2023-11-15T00:00:00+00:00"}, {"2023-11-15T00:00:00+00:00", "2023-11-16T00:00:00+00:00"}} {
		filter := iceberggo.NewAnd(iceberggo.GreaterThanEqual(iceberggo.Reference("event_time"), day[0]),
			iceberggo.LessThan(iceberggo.Reference("event_time"), day[1]))
		tasks, err := tbl.Scan(table.WithRowFilter(filter)).PlanFiles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) != 1 {
			t.Errorf("a filter on %s plans %d files, want 1", day, len(tasks))
		}
	}
}

// TestStagedFileInItsPartition: a stage whose rows fall in one day writes
// through an unpartitioned view (timePartition), so its file must get the
// very partition value, spec, directory and sort order
// that iceberg-go's partitioned writer gives a file of that day: the
// second flush spans two days and takes iceberg-go's path.
func TestStagedFileInItsPartition(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	users := func(f *sink.Flush) *sink.Flush {
		f.Tables = slices.DeleteFunc(f.Tables, func(t sink.Table) bool { return t.Name != "users" })
		return f
	}
	oneDay := users(w1Flush(1, oneSource, 1, 1, 200))
	twoDays := users(w1Flush(2, oneSource, 2, 1, 200))
	for ri := range twoDays.Tables[0].Rows {
		if ri%2 == 1 {
			twoDays.Tables[0].Rows[ri].Entry.Timestamp += 86_400_000
		}
	}
	mustCommit(t, s, oneDay)
	_, tasks := tableTasks(t, s, "users")
	if len(tasks) != 1 {
		t.Fatalf("one day's stage wrote %d files", len(tasks))
	}
	direct := tasks[0].File
	mustCommit(t, s, twoDays)
	tbl, tasks := tableTasks(t, s, "users")
	var sameDay []iceberggo.DataFile
	for _, task := range tasks {
		if task.File.FilePath() != direct.FilePath() && fmt.Sprint(task.File.Partition()) == fmt.Sprint(direct.Partition()) {
			sameDay = append(sameDay, task.File)
		}
	}
	if len(tasks) != 3 || len(sameDay) != 1 {
		t.Fatalf("%d files, %d of them iceberg-go's in the first flush's day, want 3 and 1", len(tasks), len(sameDay))
	}
	ref := sameDay[0]
	if got, want := fmt.Sprintf("%#v", direct.Partition()), fmt.Sprintf("%#v", ref.Partition()); got != want {
		t.Errorf("partition %s, iceberg-go's writer gives %s", got, want)
	}
	if direct.SpecID() != ref.SpecID() || fileDir(direct.FilePath()) != fileDir(ref.FilePath()) {
		t.Errorf("spec %d in %s, iceberg-go's writer: spec %d in %s", direct.SpecID(), fileDir(direct.FilePath()), ref.SpecID(), fileDir(ref.FilePath()))
	}
	if id := direct.SortOrderID(); id == nil || *id != tbl.Metadata().DefaultSortOrder() {
		t.Errorf("sort order %v, want the table's", id)
	}
	diffKeys(t, flushKeys(oneDay, twoDays), scanKeys(t, s))
	// Partition pruning: the first flush's day plans both of its files.
	filter := iceberggo.NewAnd(iceberggo.GreaterThanEqual(iceberggo.Reference("event_time"), "2023-11-14T00:00:00+00:00"),
		iceberggo.LessThan(iceberggo.Reference("event_time"), "2023-11-15T00:00:00+00:00"))
	planned, err := tbl.Scan(table.WithRowFilter(filter)).PlanFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(planned) != 2 {
		t.Errorf("a filter on the first day plans %d files, want 2", len(planned))
	}
}

// TestTimePartitionBounds: a stage takes the unpartitioned view only when
// both ends of its event times give one partition, and never for event
// times whose microseconds would wrap (they would no longer be ordered).
func TestTimePartitionBounds(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 16))
	tbl, err := s.LoadTable(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	const day = 86_400_000
	start := int64(1_700_000_000_000) / day * day // a day's first millisecond
	for _, c := range []struct {
		name     string
		min, max int64
		one      bool
	}{
		{"one day", start, start + day - 1, true},
		{"one instant", start + 5, start + 5, true},
		{"across midnight", start + day - 1, start + day, false},
		{"before the epoch, one day", -day, -1, true},
		{"no rows", math.MaxInt64, math.MinInt64, false},
		{"microseconds wrap", math.MaxInt64 - 1, math.MaxInt64, false},
		{"microseconds wrap below", math.MinInt64, math.MinInt64 + 1, false},
	} {
		dir, part, one := timePartition(tbl, c.min, c.max)
		if one != c.one {
			t.Errorf("%s: one partition %v, want %v (%s, %v)", c.name, one, c.one, dir, part)
			continue
		}
		if one && (len(part) != 1 || !strings.Contains(dir, "/data/event_time_day=")) {
			t.Errorf("%s: partition %v in %s", c.name, part, dir)
		}
	}
}
