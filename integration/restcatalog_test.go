//go:build unix

package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// TestRESTCatalogCrash runs `lakehouse serve --catalog rest` against a real
// Iceberg REST catalog, SeaweedFS's (tables in a table bucket, data in its
// S3 gateway): Go-client sources stream W1, the server is killed (-9) in the
// middle and restarted, and every acked entry is read back exactly once
// through the REST catalog. Skipped when the object store is gofakes3.
func TestRESTCatalogCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	s3 := startS3(t)
	uri := s3.RESTCatalog(t, "cat")
	const (
		sources    = 4
		batchSize  = 50
		maxBatches = 300
	)
	dir := t.TempDir()
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	args := []string{"serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr, "--http-addr", "",
		"--sink", "iceberg", "--catalog", "rest", "--catalog-uri", uri, "--warehouse", "s3://cat",
		"--catalog-props", s3.CatalogProps(), "--flush-interval", "300ms", "--flush-entries", "3000",
		"--log-level", "warn"}
	p := startProcEnv(t, s3.Env(), addr, logPath, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcs, wait := streamSources(ctx, "rest-src", addr, sources, batchSize, maxBatches)
	// Kill once some flushes have committed and more batches are in flight.
	for ackedCount(srcs) < sources*batchSize*maxBatches/4 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
	if n := ackedCount(srcs); n >= sources*batchSize*maxBatches {
		t.Fatalf("killed only after all %d entries were acked: nothing was in flight", n)
	} else {
		t.Logf("killed with %d of %d entries acked", n, sources*batchSize*maxBatches)
	}
	p = startProcEnv(t, s3.Env(), addr, logPath, args...)
	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	stored := readIcebergConfig(t, iceberg.Config{DataDir: t.TempDir(), CatalogType: iceberg.CatalogREST,
		CatalogURI: uri, Warehouse: "s3://cat", Properties: s3.Props()})
	checkExactlyOnce(t, srcs, stored, maxBatches*batchSize)
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}
