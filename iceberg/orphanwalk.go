package iceberg

import (
	"context"
	"errors"
	"io/fs"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// vanishingTolerantIO lets orphan cleanup's walk of a table's location skip
// a directory that disappears while it is walked: with mirrors, the
// committer deletes a part's change files under data/mirror-changes/ once
// it applied them, and on an object store the prefix is gone with its last
// object. iceberg-go's orphan planning stops at the first walk error ("open
// .../data/mirror-changes: file does not exist"), which failed every orphan
// cleanup (and its maintenance pass) that met such a directory. A path that
// no longer exists holds no orphan.
type vanishingTolerantIO struct {
	icebergio.ListableIO
}

func (v vanishingTolerantIO) WalkDir(root string, fn fs.WalkDirFunc) error {
	return v.ListableIO.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fn(path, d, err)
	})
}

// tolerantWalk returns tbl with its FileIO wrapped in vanishingTolerantIO
// (when it can list).
func (s *Sink) tolerantWalk(tbl *table.Table) *table.Table {
	inner := tbl.FS
	wrapped := func(ctx context.Context) (icebergio.IO, error) {
		fsys, err := inner(ctx)
		if err != nil {
			return nil, err
		}
		if l, ok := fsys.(icebergio.ListableIO); ok {
			return vanishingTolerantIO{ListableIO: l}, nil
		}
		return fsys, nil
	}
	return table.New(tbl.Identifier(), tbl.Metadata(), tbl.MetadataLocation(), wrapped, s.cat)
}
