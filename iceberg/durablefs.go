package iceberg

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"

	icebergio "github.com/apache/iceberg-go/io"
)

// A commit is only as durable as the files it points to. On blob storage a
// written object is durable once its upload returns. iceberg-go's local
// file IO (file://, the embedded default) closes files without fsync, so
// after a power loss or an OS crash the catalog could point at a metadata
// file, manifest or data file still in the page cache, now empty or torn,
// while the write-ahead log, released by that commit, no longer holds the
// rows: the table lost committed data, or could not be loaded at all.
//
// durableFS makes each file written through it durable when it is closed:
// the file's data, and its entry in its directory (and the entries of any
// directories created for it) are fsync'd. iceberg-go's catalogs write
// table metadata through the IO of the file:// scheme from iceberg-go's
// process-wide registry, not through a table's IO, so the scheme itself is
// replaced, once, as this package does for arrow-go's zstd codec
// (zstdcodec.go).
type durableFS struct {
	icebergio.LocalFS
	// synced, if set, is called with each path made durable (tests).
	synced func(path string)
}

func init() {
	factory := func(context.Context, *url.URL, map[string]string) (icebergio.IO, error) {
		return durableFS{}, nil
	}
	for _, scheme := range []string{"file", ""} {
		icebergio.Unregister(scheme)
		icebergio.Register(scheme, factory)
	}
}

// localFilePath is the local path of name, a file:// URL or a path.
func localFilePath(name string) (string, error) {
	u, err := url.Parse(name)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "":
		return filepath.FromSlash(name), nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "", &os.PathError{Op: "create", Path: name, Err: errors.New("not a local file URL")}
		}
		return filepath.FromSlash(u.Path), nil
	}
	return "", &os.PathError{Op: "create", Path: name, Err: errors.New("not a local file URL")}
}

// Create creates the named file, and its directories as needed, and
// returns a writer that makes it durable on Close.
func (d durableFS) Create(name string) (icebergio.FileWriter, error) {
	path, err := localFilePath(name)
	if err != nil {
		return nil, err
	}
	if err := d.mkdirAll(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &durableFile{File: f, fs: d, path: path}, nil
}

// WriteFile writes p to the named file and makes it durable.
func (d durableFS) WriteFile(name string, p []byte) error {
	w, err := d.Create(name)
	if err != nil {
		return err
	}
	_, err = w.Write(p)
	return errors.Join(err, w.Close())
}

// mkdirAll creates dir and its missing parents, each made durable in its
// parent.
func (d durableFS) mkdirAll(dir string) error {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := d.syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

func (d durableFS) syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && d.synced != nil {
		d.synced(dir)
	}
	return err
}

// Rename renames a file and makes the rename durable.
func (d durableFS) Rename(oldpath, newpath string) error {
	if err := d.LocalFS.Rename(oldpath, newpath); err != nil {
		return err
	}
	return d.syncParent(newpath)
}

// RenameNoReplace renames a file unless newpath exists, durably.
func (d durableFS) RenameNoReplace(oldpath, newpath string) error {
	if err := d.LocalFS.RenameNoReplace(oldpath, newpath); err != nil {
		return err
	}
	return d.syncParent(newpath)
}

func (d durableFS) syncParent(name string) error {
	path, err := localFilePath(name)
	if err != nil {
		return err
	}
	return d.syncDir(filepath.Dir(path))
}

// durableFile is a file of durableFS being written.
type durableFile struct {
	*os.File
	fs   durableFS
	path string
}

var _ io.ReaderFrom = (*durableFile)(nil)

// Close makes the file's data and its directory entry durable, then
// closes it.
func (f *durableFile) Close() error {
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if f.fs.synced != nil {
		f.fs.synced(f.path)
	}
	return f.fs.syncDir(filepath.Dir(f.path))
}
