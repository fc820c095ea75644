package iceberg

import (
	"context"
	"os"
	"path/filepath"
	"slices"
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
