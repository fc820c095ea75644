package iceberg

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// TestChangelogColumnsWithoutDictionary: entry_seq, the row images, the
// row id, source_id and op are written without a Parquet dictionary (the
// first nearly distinct: the dictionary is built for every page and then
// dropped by the cost-based fallback; the last two in long runs, where
// hashing each value costs more than it saves), and the files written have
// none for them while the other columns keep theirs: set on new tables, and with the next commit on
// a table created before the setting existed; a value set on purpose (ALTER
// TABLE, or Config.TableProperties) is left alone.
func TestChangelogColumnsWithoutDictionary(t *testing.T) {
	ctx := context.Background()
	dictKey := dictColumnPrefix + "entry_seq"
	s := openTestSink(t, t.TempDir(), nil)
	props := func() iceberg.Properties {
		t.Helper()
		tbl, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		return tbl.Properties()
	}
	alter := func(remove []string, set iceberg.Properties) {
		t.Helper()
		tbl, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		txn := tbl.NewTransaction()
		if len(remove) > 0 {
			if err := txn.RemoveProperties(remove); err != nil {
				t.Fatal(err)
			}
		}
		if len(set) > 0 {
			if err := txn.SetProperties(set); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Enough rows for a dictionary to pay for itself where one is kept.
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 20_000))
	plain := []string{"before", "after", "row_id", "entry_seq", "source_id", "op"}
	for _, col := range plain {
		if got := props()[dictColumnPrefix+col]; got != "false" {
			t.Errorf("new table: %s%s = %q, want false", dictColumnPrefix, col, got)
		}
	}
	checkDictionaries(t, liveFiles(t, s, "users"), plain, []string{"shard_name", "batch_seq"})

	// A table from before the setting: it gets it with the next commit.
	alter([]string{dictKey}, nil)
	if _, ok := props()[dictKey]; ok {
		t.Fatal("property not removed")
	}
	mustCommit(t, s, w1Flush(2, oneSource, 2, 1, 8))
	if got := props()[dictKey]; got != "false" {
		t.Errorf("old table after a commit: %s = %q, want false", dictKey, got)
	}

	// Someone turned the dictionary back on: the next commit leaves it.
	alter(nil, iceberg.Properties{dictKey: "true"})
	mustCommit(t, s, w1Flush(3, oneSource, 3, 1, 8))
	if got := props()[dictKey]; got != "true" {
		t.Errorf("after ALTER TABLE and a commit: %s = %q, want the altered true", dictKey, got)
	}

	// Config.TableProperties wins at creation.
	s2 := openTestSink(t, t.TempDir(), func(c *Config) { c.TableProperties = map[string]string{dictKey: "true"} })
	mustCommit(t, s2, w1Flush(1, oneSource, 1, 1, 8))
	tbl, err := s2.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if got := tbl.Properties()[dictKey]; got != "true" {
		t.Errorf("with Config.TableProperties true: %s = %q", dictKey, got)
	}
}

// TestChangelogPagesBounded: a staged file's Parquet pages stay near
// changelogPageBytes, whatever the flush's size. A compaction holds a page
// of every column of each of its inputs; with iceberg-go's defaults a staged
// file of a large flush held each row-image column in one page of megabytes.
func TestChangelogPagesBounded(t *testing.T) {
	s := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 100_000))
	files := liveFiles(t, s, "users")
	if len(files) == 0 {
		t.Fatal("users has no data file")
	}
	// A page is cut at the first check past the size: at most
	// changelogPageRows values beyond it (W1 row images are well under
	// 1 KiB each).
	const limit = changelogPageBytes + changelogPageRows<<10
	var largest, columnBytes int
	for _, p := range files {
		r, err := file.OpenParquetFile(localPath(p), false)
		if err != nil {
			t.Fatal(err)
		}
		for rg := range r.NumRowGroups() {
			rgr := r.RowGroup(rg)
			for c := range r.MetaData().Schema.NumColumns() {
				cc, err := rgr.MetaData().ColumnChunk(c)
				if err != nil {
					t.Fatal(err)
				}
				columnBytes = max(columnBytes, int(cc.TotalUncompressedSize()))
				pr, err := rgr.GetColumnPageReader(c)
				if err != nil {
					t.Fatal(err)
				}
				for pr.Next() {
					largest = max(largest, len(pr.Page().Data()))
				}
				if err := pr.Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		r.Close()
	}
	if columnBytes < 4*changelogPageBytes {
		t.Fatalf("largest column chunk %d bytes: too small to need several pages; the test needs a larger flush", columnBytes)
	}
	if largest > limit {
		t.Errorf("largest page %d bytes (column chunks up to %d), want at most %d", largest, columnBytes, limit)
	}
}

// checkDictionaries checks that the files' column chunks of the columns
// plain have no dictionary page and those of dict have one.
func checkDictionaries(t *testing.T, files []string, plain, dict []string) {
	t.Helper()
	if len(files) == 0 {
		t.Fatal("no data file")
	}
	for _, p := range files {
		r, err := file.OpenParquetFile(localPath(p), false)
		if err != nil {
			t.Fatal(err)
		}
		sc := r.MetaData().Schema
		for rg := range r.NumRowGroups() {
			for _, c := range []struct {
				cols []string
				want bool
			}{{plain, false}, {dict, true}} {
				for _, col := range c.cols {
					idx := sc.ColumnIndexByName(col)
					if idx < 0 {
						t.Fatalf("%s: no column %s", p, col)
					}
					cc, err := r.MetaData().RowGroup(rg).ColumnChunk(idx)
					if err != nil {
						t.Fatal(err)
					}
					if got := cc.HasDictionaryPage(); got != c.want {
						t.Errorf("%s: column %s has a dictionary page: %v, want %v", p, col, got, c.want)
					}
				}
			}
		}
		r.Close()
	}
}

// TestMirrorPageProps: mirror tables get the changelog's page settings
// (mirrorWriteProps) when created, an older mirror with its next commit,
// and a value someone set on purpose stays.
func TestMirrorPageProps(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true })
	key := table.ParquetPageRowLimitKey
	want := strconv.Itoa(changelogPageRows)
	props := func() iceberg.Properties {
		t.Helper()
		tbl, err := s.LoadMirrorTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		return tbl.Properties()
	}
	alter := func(f func(*table.Transaction) error) {
		t.Helper()
		tbl, err := s.LoadMirrorTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		txn := tbl.NewTransaction()
		if err := f(txn); err != nil {
			t.Fatal(err)
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 8))
	for k, v := range mirrorWriteProps() {
		if got := props()[k]; got != v {
			t.Errorf("new mirror: %s = %q, want %q", k, got, v)
		}
	}
	alter(func(txn *table.Transaction) error { return txn.RemoveProperties([]string{key}) })
	mustCommit(t, s, w1Flush(2, oneSource, 2, 1, 8))
	if got := props()[key]; got != want {
		t.Errorf("older mirror after a commit: %s = %q, want %q", key, got, want)
	}
	alter(func(txn *table.Transaction) error { return txn.SetProperties(iceberg.Properties{key: "1000"}) })
	mustCommit(t, s, w1Flush(3, oneSource, 3, 1, 8))
	if got := props()[key]; got != "1000" {
		t.Errorf("after ALTER TABLE and a commit: %s = %q, want the altered 1000", key, got)
	}
}

// TestChangelogRowGroupsBounded: changelog tables are written in row groups
// of changelogRowGroupBytes (set on a new table, and with the next commit on
// a table created before the setting existed), and compaction cuts what it
// writes into row groups of the table's size. A Parquet writer holds a row
// group's pages in memory until it closes it: with iceberg-go's 128 MiB, a
// final merge held its whole output file.
func TestChangelogRowGroupsBounded(t *testing.T) {
	ctx := context.Background()
	key := table.ParquetRowGroupSizeBytesKey
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Maintenance.CompactMinFiles = 4 })
	load := func() *table.Table {
		t.Helper()
		tbl, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	alter := func(f func(*table.Transaction) error) {
		t.Helper()
		txn := load().NewTransaction()
		if err := f(txn); err != nil {
			t.Fatal(err)
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := strconv.Itoa(changelogRowGroupBytes)
	mustCommit(t, s, w1Flush(1, testSources, 1, 1, 8))
	if got := load().Properties()[key]; got != want {
		t.Errorf("new table: %s = %q, want %s", key, got, want)
	}
	alter(func(txn *table.Transaction) error { return txn.RemoveProperties([]string{key}) })
	mustCommit(t, s, w1Flush(2, testSources, 2, 1, 8))
	if got := load().Properties()[key]; got != want {
		t.Errorf("older table after a commit: %s = %q, want %s", key, got, want)
	}
	if got := mirrorWriteProps()[key]; got != want {
		t.Errorf("mirror tables: %s = %q, want %s (TestMirrorPageProps checks they get it)", key, got, want)
	}

	// A merge's output, in row groups of the table's size (small here, for
	// a file of a few row groups). The size is checked before each slice
	// the writer takes (writeSliceRows): a row group holds at least the
	// size, and at most a slice more.
	const rowGroup = 16 << 10
	alter(func(txn *table.Transaction) error {
		return txn.SetProperties(iceberg.Properties{key: strconv.Itoa(rowGroup)})
	})
	for i := uint64(3); i <= 6; i++ {
		mustCommit(t, s, w1Flush(i, testSources, i, 1, 6000))
	}
	if got := load().Properties()[key]; got != strconv.Itoa(rowGroup) {
		t.Fatalf("after ALTER TABLE and commits: %s = %q, want the altered %d", key, got, rowGroup)
	}
	res, err := s.compactTable(ctx, "users")
	if err != nil || res.filesAdded != 1 {
		t.Fatalf("compaction: %+v, %v", res, err)
	}
	// The merge's output: the largest file (the first two commits' stay
	// small, a tier apart).
	_, tasks := tableTasks(t, s, "users")
	merged := slices.MaxFunc(tasks, func(a, b table.FileScanTask) int {
		return cmp.Compare(a.File.FileSizeBytes(), b.File.FileSizeBytes())
	}).File
	r, err := file.OpenParquetFile(localPath(merged.FilePath()), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	md := r.MetaData()
	var sizes []int64
	for i := range md.NumRowGroups() {
		var n int64
		for c := range md.RowGroup(i).NumColumns() {
			cc, err := md.RowGroup(i).ColumnChunk(c)
			if err != nil {
				t.Fatal(err)
			}
			n += cc.TotalCompressedSize()
		}
		sizes = append(sizes, n)
	}
	if len(sizes) < 3 {
		t.Fatalf("the merged file (%d bytes) has %d row groups of %v bytes, want them of about %d", merged.FileSizeBytes(), len(sizes), sizes, rowGroup)
	}
	for i, n := range sizes[:len(sizes)-1] {
		if n < rowGroup || n > 4*rowGroup {
			t.Errorf("row group %d of %d: %d bytes, want %d to %d", i, len(sizes), n, rowGroup, 4*rowGroup)
		}
	}
}
