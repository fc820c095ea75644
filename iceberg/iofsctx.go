package iceberg

import (
	"context"

	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/io/gocloud/blobfs"
	"gocloud.dev/blob"
)

// bindWalkContext makes a blob-backed table IO list under ctx, the context
// it was opened for.
//
// iceberg-go's blob IO reads and writes under that context, but its WalkDir
// (orphan cleanup's directory walk) goes through the bucket's io/fs view,
// whose calls use the bucket's IOFS callback: context.Background unless set.
// On a stalled object store such a walk held orphan cleanup, and with it the
// maintenance pass and the commit lock, past the maintenance timeout until
// the store answered again.
//
// iceberg-go opens a new bucket for every IO (io.LoadFS), so the callback is
// set on a bucket no other goroutine holds yet.
func bindWalkContext(ctx context.Context, fs icebergio.IO) {
	if b, ok := fs.(*blobfs.FileIO); ok && b.Bucket != nil {
		b.SetIOFSCallback(func() (context.Context, *blob.ReaderOptions) { return ctx, nil })
	}
}
