package tmpfs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Mount mounts a tmpfs of size (mount's notation: "4m") on a new directory
// and unmounts it when the test ends. It fails without root or
// CAP_SYS_ADMIN: the caller skips, saying what covers the case instead.
//
// Call it before starting anything that writes there: the unmount, a
// cleanup registered first, then runs after theirs, and waits up to five
// seconds for a killed process's files to close.
func Mount(t testing.TB, size string) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		return "", err
	}
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
	return dir, nil
}
