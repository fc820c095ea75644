// Package tmpfs gives tests a small filesystem of their own to fill: the
// real ENOSPC of a full disk, for the write-ahead log, the catalog and the
// warehouse, without filling the machine's.
package tmpfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Fill writes a file in dir until the filesystem is full, the last bytes
// below a page too, and returns its path and size. Removing the file frees
// the filesystem.
func Fill(t testing.TB, dir string) (path string, n int64) {
	t.Helper()
	path = filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, size := range []int{len(buf), 512} {
		for {
			w, err := f.Write(buf[:size])
			n += int64(w)
			if err == nil {
				continue
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	return path, n
}
