package wal

import "os"

// segmentFile is what the writer and Recover need of a segment open for
// writing. *os.File implements it.
type segmentFile interface {
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// fileSystem opens segment files for writing. The log uses the operating
// system's; the tests substitute one that injects write, fsync and ENOSPC
// failures. Reads (Open's scan, Replay) and directory operations always go
// to the operating system.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (segmentFile, error)
}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (segmentFile, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return f, nil
}
