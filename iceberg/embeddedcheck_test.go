package iceberg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopiedDataDirRefused: a copy of a data directory at another path
// (its embedded catalog still holds the original's absolute paths) is
// refused by Open with an error naming a table and both locations. Before,
// the copy opened, and its commits, compactions and orphan cleanup changed
// the original's files.
// The original, also through a symbolic link, still opens.
func TestCopiedDataDirRefused(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	orig := filepath.Join(root, "orig")
	s := openTestSink(t, orig, mirrorOn)
	mustCommit(t, s, updateFlush(1, "t", []string{"a", "b"}, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cp := filepath.Join(root, "copy")
	if err := os.CopyFS(cp, os.DirFS(orig)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, Config{DataDir: cp, Logger: quietLogger()})
	if err == nil {
		t.Fatal("a copy of a data directory opened")
	}
	for _, want := range []string{"outside the warehouse", filepath.Join(orig, "warehouse"), filepath.Join(cp, "warehouse"), ".t "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Log(err)

	link := filepath.Join(root, "link")
	if err := os.Symlink(orig, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{orig, link} {
		s, err := Open(ctx, Config{DataDir: dir, Logger: quietLogger(), Mirror: true})
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
