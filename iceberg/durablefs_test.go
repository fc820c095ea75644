package iceberg

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	icebergio "github.com/apache/iceberg-go/io"
)

// TestLocalSchemesAreDurable: the IO iceberg-go picks for file:// and bare
// paths, through which its catalogs write table metadata and the sink's
// tables write manifests and data files, is the durable one.
func TestLocalSchemesAreDurable(t *testing.T) {
	dir := t.TempDir()
	for _, loc := range []string{"file://" + filepath.ToSlash(dir) + "/t/metadata/v1.metadata.json", filepath.Join(dir, "t", "x")} {
		fs, err := icebergio.LoadFS(context.Background(), nil, loc)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fs.(durableFS); !ok {
			t.Errorf("%s: IO %T, want durableFS", loc, fs)
		}
	}
	s := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, s, w1Flush(1, testSources, 1, 1, 10))
	tbl, err := s.LoadTable(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := tbl.FS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fs.(durableFS); !ok {
		t.Errorf("table IO %T, want durableFS", fs)
	}
}

// TestDurableFSSyncs: a file written through durableFS is fsync'd on Close,
// then its directory; directories created for it are fsync'd in their
// parents first.
func TestDurableFSSyncs(t *testing.T) {
	base := t.TempDir()
	var synced []string
	d := durableFS{synced: func(p string) { synced = append(synced, p) }}
	path := filepath.Join(base, "a", "b", "f.parquet")
	w, err := d.Create("file://" + filepath.ToSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	// a and b are new: base holds a's entry, a holds b's.
	if want := []string{base, filepath.Join(base, "a")}; !slices.Equal(synced, want) {
		t.Errorf("synced on create %q, want %q", synced, want)
	}
	synced = nil
	if _, err := w.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []string{path, filepath.Join(base, "a", "b")}; !slices.Equal(synced, want) {
		t.Errorf("synced on close %q, want %q", synced, want)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "data" {
		t.Errorf("read back %q, %v", got, err)
	}

	synced = nil
	other := filepath.Join(base, "a", "b", "g.json")
	if err := d.WriteFile(other, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if want := []string{other, filepath.Join(base, "a", "b")}; !slices.Equal(synced, want) {
		t.Errorf("WriteFile synced %q, want %q", synced, want)
	}
	if _, err := d.Create("s3://bucket/x"); err == nil {
		t.Error("durableFS created a file for an s3:// URL")
	}
}

// TestCommittedFilesAreSynced: after a commit, every file its snapshot
// points to through the table's IO (the manifest list, the manifests, the
// data files) was fsync'd; the catalog's metadata file goes through the same
// IO type (TestLocalSchemesAreDurable).
func TestCommittedFilesAreSynced(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	synced := make(map[string]bool)
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.WrapIO = func(fs icebergio.IO) icebergio.IO {
			d, ok := fs.(durableFS)
			if !ok {
				t.Errorf("table IO %T, want durableFS", fs)
				return fs
			}
			d.synced = func(p string) {
				mu.Lock()
				defer mu.Unlock()
				synced[p] = true
			}
			return d
		}
	})
	mustCommit(t, s, w1Flush(1, testSources, 1, 1, 50))
	mustCommit(t, s, w1Flush(2, testSources, 2, 1, 50))
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		t.Fatal("users has no snapshot")
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{snap.ManifestList}
	manifests, err := snap.Manifests(fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range manifests {
		paths = append(paths, m.FilePath())
		entries, err := m.FetchEntries(fs, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			paths = append(paths, e.DataFile().FilePath())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range paths {
		lp := filepath.FromSlash(localPath(p))
		if !synced[lp] {
			t.Errorf("%s: not fsync'd", lp)
		}
		if !synced[filepath.Dir(lp)] {
			t.Errorf("%s: its directory was not fsync'd", lp)
		}
	}
	if len(paths) < 4 {
		t.Errorf("only %d files checked", len(paths))
	}
}
