// Package dirlock takes an exclusive lock on a data directory, so that two
// servers never share one write-ahead log: the second would replay and
// commit the first one's batches and rewrite its sequencing state.
//
// The lock is flock(2) on a LOCK file in the directory, as pebble and
// LevelDB do: the kernel releases it when the holder exits, even on kill -9,
// so a crash never leaves a stale lock behind. The file holds the holder's
// pid, for the error message of whoever finds it taken.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file's name inside the directory.
const FileName = "LOCK"

// ErrLocked is returned (wrapped) when another process holds the lock.
var ErrLocked = errors.New("data directory is locked by another process")

// Lock is a held directory lock.
type Lock struct {
	f    *os.File
	path string
}

// Acquire locks dir, which must exist. It fails at once, without waiting,
// when another holder has it; the error names the holder's pid.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s is held by %s; stop it or choose another --data-dir", ErrLocked, path, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Record the holder. A failure here only makes a later error message
	// vaguer, so it does not fail the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// Release unlocks the directory. The LOCK file stays (removing it would race
// with a process that just opened it). Release on a nil Lock does nothing.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlockFile(l.f)
	err = errors.Join(err, l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.path, err)
	}
	return nil
}

func readHolder(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n]))); err == nil && pid > 0 {
		return fmt.Sprintf("pid %d", pid)
	}
	return "another process (pid unknown)"
}
