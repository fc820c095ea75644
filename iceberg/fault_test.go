package iceberg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// flakyIO fails writes whose path contains match while failing is set:
// at Create ("create"), at WriteFile, or at the writer's Close ("close",
// as an object store failing the upload's completion).
type flakyIO struct {
	icebergio.WriteFileIO
	failing *atomic.Bool
	mode    string
	match   string
	fails   *atomic.Int64
}

var errInjected = errors.New("injected storage failure")

func (f flakyIO) hit(name string) bool {
	return f.failing.Load() && strings.Contains(name, f.match)
}

func (f flakyIO) Create(name string) (icebergio.FileWriter, error) {
	if f.mode == "create" && f.hit(name) {
		f.fails.Add(1)
		return nil, fmt.Errorf("create %s: %w", name, errInjected)
	}
	w, err := f.WriteFileIO.Create(name)
	if err != nil || f.mode != "close" || !f.hit(name) {
		return w, err
	}
	return failingCloser{FileWriter: w, f: f, name: name}, nil
}

func (f flakyIO) WriteFile(name string, p []byte) error {
	if f.mode != "close" && f.hit(name) {
		f.fails.Add(1)
		return fmt.Errorf("write %s: %w", name, errInjected)
	}
	return f.WriteFileIO.WriteFile(name, p)
}

type failingCloser struct {
	icebergio.FileWriter
	f    flakyIO
	name string
}

func (w failingCloser) Close() error {
	err := w.FileWriter.Close()
	w.f.fails.Add(1)
	_ = w.f.WriteFileIO.Remove(w.name) // the upload never completed
	return errors.Join(err, fmt.Errorf("close %s: %w", w.name, errInjected))
}

func TestStorageFailure(t *testing.T) {
	cases := []struct {
		name, mode, match string
	}{
		{"data file create fails", "create", "/data/"},
		{"data file upload fails at close", "close", "/data/"},
		{"manifest write fails", "create", "/metadata/"},
		{"every write fails", "create", "/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var failing atomic.Bool
			var fails atomic.Int64
			s := openTestSink(t, t.TempDir(), func(c *Config) {
				c.WrapIO = func(fs icebergio.IO) icebergio.IO {
					w, ok := fs.(icebergio.WriteFileIO)
					if !ok {
						t.Errorf("table IO %T cannot write", fs)
						return fs
					}
					return flakyIO{WriteFileIO: w, failing: &failing, mode: tc.mode, match: tc.match, fails: &fails}
				}
			})
			two := testSources[:2]
			f1 := w1Flush(1, two, 1, 1, 16)
			f2 := w1Flush(2, two, 2, 2, 16)
			mustCommit(t, s, f1)
			snaps := snapshotCounts(t, s)

			failing.Store(true)
			for attempt := 0; attempt < 2; attempt++ {
				res, err := s.Commit(ctx, f2)
				// iceberg-go may lose the write error itself; the sink then
				// catches the incomplete staged append (ErrIncompleteWrite).
				if !errors.Is(err, errInjected) && !errors.Is(err, ErrIncompleteWrite) {
					t.Fatalf("attempt %d while storage fails: %v (result %+v)", attempt, err, res)
				}
				if res.RowsWritten != 0 || res.Tables != 0 {
					t.Fatalf("attempt %d wrote %+v", attempt, res)
				}
			}
			if fails.Load() == 0 {
				t.Fatal("no injected failure was hit")
			}
			// Nothing of the failed attempts is visible.
			diffKeys(t, flushKeys(f1), scanKeys(t, s))
			if got := snapshotCounts(t, s); fmt.Sprint(got) != fmt.Sprint(snaps) {
				t.Errorf("snapshots changed by failed commits: %v -> %v", snaps, got)
			}
			wm, err := s.Watermarks(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for src, w := range f1.Watermarks {
				if wm[src] != w {
					t.Errorf("watermark %s = %+v after failures, want %+v", src, wm[src], w)
				}
			}

			failing.Store(false)
			res := mustCommit(t, s, f2)
			if res.RowsWritten != flushRows(f2) || res.RowsSkipped != 0 {
				t.Fatalf("after recovery: %+v", res)
			}
			diffKeys(t, flushKeys(f1, f2), scanKeys(t, s))
		})
	}
}

func snapshotCounts(t *testing.T, s *Sink) map[string]int {
	t.Helper()
	infos, err := s.Tables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int)
	for _, i := range infos {
		out[i.Name] = i.Snapshots
	}
	return out
}

func TestUnwritableWarehouse(t *testing.T) {
	// A warehouse path under a regular file cannot be created by anyone,
	// root included.
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Config{DataDir: dir, Warehouse: "file://" + blocker + "/warehouse", Logger: quietLogger()})
	if err == nil {
		t.Fatal("Open with an unwritable warehouse succeeded")
	}
}

func TestParquetIndependentReader(t *testing.T) {
	s := openTestSink(t, t.TempDir(), nil)
	f := w1Flush(1, testSources, 1, 1, 40)
	res := mustCommit(t, s, f)
	want := map[string]int64{}
	for _, tb := range f.Tables {
		want[tb.Name] = int64(len(tb.Rows))
	}
	if len(res.Paths) != len(f.Tables) {
		t.Fatalf("%d data files for %d tables", len(res.Paths), len(f.Tables))
	}
	// The expected physical schema: name, field id, physical type, logical
	// type, required.
	type col struct {
		id       int32
		phys     format.Type
		logical  string
		required bool
	}
	wantCols := map[string]col{
		"source_id":   {1, format.ByteArray, "STRING", true},
		"shard_name":  {2, format.ByteArray, "STRING", false},
		"batch_seq":   {3, format.Int64, "INT(64,true)", true},
		"entry_seq":   {4, format.Int64, "INT(64,true)", true},
		"op":          {5, format.ByteArray, "STRING", true},
		"event_time":  {6, format.Int64, "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)", true},
		"row_id":      {7, format.ByteArray, "STRING", true},
		"before":      {8, format.ByteArray, "STRING", false},
		"after":       {9, format.ByteArray, "STRING", false},
		"ingest_time": {10, format.Int64, "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)", true},
	}
	var total int64
	for _, p := range res.Paths {
		path := strings.TrimPrefix(p, "file://")
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, err := fh.Stat()
		if err != nil {
			t.Fatal(err)
		}
		pf, err := parquet.OpenFile(fh, st.Size())
		if err != nil {
			fh.Close()
			t.Fatalf("parquet-go cannot open %s: %v", p, err)
		}
		md := pf.Metadata()
		seen := 0
		for _, el := range md.Schema[1:] {
			w, ok := wantCols[el.Name]
			if !ok {
				t.Errorf("%s: unexpected column %q", p, el.Name)
				continue
			}
			seen++
			phys, _ := el.Type.Get()
			rep, _ := el.RepetitionType.Get()
			if el.FieldID != w.id || phys != w.phys || (rep == format.Required) != w.required ||
				!strings.EqualFold(el.LogicalType.String(), w.logical) {
				t.Errorf("%s: column %s: id %d type %v logical %q repetition %v, want %+v",
					p, el.Name, el.FieldID, phys, el.LogicalType.String(), rep, w)
			}
		}
		if seen != len(wantCols) {
			t.Errorf("%s: %d of %d columns", p, seen, len(wantCols))
		}
		for _, rg := range md.RowGroups {
			for _, cc := range rg.Columns {
				if cc.MetaData.Codec != format.Zstd {
					t.Errorf("%s: column %v compressed with %v, want ZSTD", p, cc.MetaData.PathInSchema, cc.MetaData.Codec)
				}
			}
		}
		// Rows are sorted by (source_id, entry_seq) within the file.
		checkSortedFile(t, p)
		total += pf.NumRows()
		fh.Close()
	}
	if total != flushRows(f) {
		t.Errorf("parquet files hold %d rows, want %d", total, flushRows(f))
	}
}

func readRows(t *testing.T, pf *parquet.File, rows []parquet.Row) int {
	t.Helper()
	n := 0
	for _, rg := range pf.RowGroups() {
		r := rg.Rows()
		for n < len(rows) {
			k, err := r.ReadRows(rows[n:])
			n += k
			if err != nil {
				break
			}
		}
		r.Close()
	}
	return n
}

func columnIndex(pf *parquet.File, name string) int {
	leaf, ok := pf.Schema().Lookup(name)
	if !ok {
		return -1
	}
	return leaf.ColumnIndex
}

func TestHostileTableNames(t *testing.T) {
	cases := []string{
		"../../etc/passwd",
		"Users-Table",
		"/absolute/path",
		"a/../../b",
		`..\..\windows`,
		"with space and ünïcode",
		"",
		"123numeric",
		strings.Repeat("x", 300),
	}
	dir := t.TempDir()
	s := openTestSink(t, dir, nil)
	ctx := context.Background()
	warehouse := filepath.Join(dir, "warehouse")
	for i, name := range cases {
		e := w1Flush(uint64(i+1), testSources[:1], 1, 1, 1).Tables[0].Rows[0]
		f := &sink.Flush{ID: uint64(i + 1), Reason: "test", Time: time.Now(),
			Tables: []sink.Table{{Name: name, Rows: []sink.Row{e}}}, Watermarks: map[string]sink.Watermark{e.SourceID: {BatchSeq: 1, EntrySeq: 1}}}
		res := mustCommit(t, s, f)
		if res.RowsWritten != 1 || len(res.Paths) != 1 {
			t.Fatalf("%q: %+v", name, res)
		}
		local := filepath.Clean(strings.TrimPrefix(res.Paths[0], "file://"))
		if !strings.HasPrefix(local, warehouse+string(filepath.Separator)) {
			t.Errorf("%q: data file %s escapes the warehouse %s", name, local, warehouse)
		}
		tbl, err := s.LoadTable(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := tbl.Properties()[PropOriginalName]; got != name {
			t.Errorf("%q: original name property %q", name, got)
		}
		loc := strings.TrimPrefix(tbl.Location(), "file://")
		if !strings.HasPrefix(filepath.Clean(loc), warehouse+string(filepath.Separator)) {
			t.Errorf("%q: table location %s escapes the warehouse", name, loc)
		}
		recs, err := s.Scan(ctx, name, 0)
		if err != nil || len(recs) != 1 {
			t.Errorf("%q: scan %v %v", name, recs, err)
		}
	}
	// Nothing was written outside the warehouse and the catalog file.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); n != "warehouse" && !strings.HasPrefix(n, "catalog.db") {
			t.Errorf("unexpected entry %s in the data dir", n)
		}
	}
	infos, err := s.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(cases) {
		t.Errorf("%d tables for %d distinct names", len(infos), len(cases))
	}
}
