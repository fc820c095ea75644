//go:build linux

package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// smallDisk mounts a tmpfs of size for the server's data directory and
// unmounts it when the test ends; it returns "" and why when it cannot.
func smallDisk(t *testing.T, size string) (dir, why string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		return "", "cannot mount a " + size + " tmpfs to fill (" + err.Error() + "): the full-disk scenario needs root or CAP_SYS_ADMIN"
	}
	// Registered before the cluster, so it runs after the server is killed.
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := syscall.Unmount(dir, 0)
			if err == nil || i == 50 {
				if err != nil {
					t.Errorf("unmount %s: %v", dir, err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir, ""
}

// fullDisk fills the filesystem of dir for d, then frees it.
func fullDisk(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	path, _ := fillDisk(t, dir)
	defer os.Remove(path)
	time.Sleep(d)
}
