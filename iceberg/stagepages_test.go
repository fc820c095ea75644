package iceberg

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"
)

// largestDataPage returns the uncompressed size of the largest data page
// of column col in the Parquet file at p, and the column's uncompressed size.
func largestDataPage(t *testing.T, p, col string) (largest, total int32) {
	t.Helper()
	r, err := file.OpenParquetFile(localPath(p), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	idx := r.MetaData().Schema.ColumnIndexByName(col)
	if idx < 0 {
		t.Fatalf("%s: no column %q", p, col)
	}
	for i := range r.NumRowGroups() {
		pr, err := r.RowGroup(i).GetColumnPageReader(idx)
		if err != nil {
			t.Fatal(err)
		}
		for pr.Next() {
			if pg, ok := pr.Page().(file.DataPage); ok {
				total += pg.UncompressedSize()
				largest = max(largest, pg.UncompressedSize())
			}
		}
		if err := pr.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return largest, total
}

// stageUsers commits four W1 flushes to s and returns the largest page of
// the after column in each of the users table's files, and the most a page
// of stagedPageBytes can hold: a page is cut once it holds the page size,
// checked every changelogPageRows values.
func stageUsers(t *testing.T, s *Sink) (largest []int32, most int32) {
	t.Helper()
	var longest int
	for i := uint64(1); i <= 4; i++ {
		f := w1Flush(i, testSources, i, 1, 6000)
		for _, tt := range f.Tables {
			for _, r := range tt.Rows {
				longest = max(longest, len(r.Entry.After))
			}
		}
		mustCommit(t, s, f)
	}
	_, tasks := tableTasks(t, s, "users")
	for _, task := range tasks {
		l, total := largestDataPage(t, task.File.FilePath(), "after")
		if total < 4*stagedPageBytes {
			t.Fatalf("%s: after holds %d bytes: too few to tell page sizes apart", task.File.FilePath(), total)
		}
		largest = append(largest, l)
	}
	return largest, int32(stagedPageBytes + changelogPageRows*(longest+4))
}

// TestStagedFilesHaveSmallPages: staged files are written in pages of at
// most stagedPageBytes, since a compaction holds a decompressed page of each
// column of each of its inputs, and merges up to compactMaxSmallInputs of
// them; what compaction writes has the table's pages. With the table's
// 256-KiB pages in staged files, a merge of about 60 staged W1 files held
// 113 MB of pages. With compaction off, staged files are the table's for
// good, and have its pages.
func TestStagedFilesHaveSmallPages(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	largest, most := stageUsers(t, s)
	for i, l := range largest {
		if l > most {
			t.Errorf("staged file %d: a page of after holds %d bytes, want at most %d", i, l, most)
		}
	}
	res, err := s.compactTable(ctx, "users")
	if err != nil || res.filesAdded == 0 {
		t.Fatalf("compaction: %+v, %v", res, err)
	}
	_, tasks := tableTasks(t, s, "users")
	if len(tasks) != 1 {
		t.Fatalf("%d files after compaction, want 1", len(tasks))
	}
	if l, _ := largestDataPage(t, tasks[0].File.FilePath(), "after"); l < changelogPageBytes {
		t.Errorf("compacted file: its largest page of after holds %d bytes, want the table's pages (%d)", l, changelogPageBytes)
	}

	off := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	largest, _ = stageUsers(t, off)
	for i, l := range largest {
		if l < changelogPageBytes {
			t.Errorf("compaction off, staged file %d: its largest page of after holds %d bytes, want the table's pages (%d)", i, l, changelogPageBytes)
		}
	}
}
