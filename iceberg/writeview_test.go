package iceberg

import (
	"context"
	"fmt"
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
