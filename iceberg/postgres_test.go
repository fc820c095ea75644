package iceberg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// TestPostgresCatalog runs a round trip with iceberg-go's SQL catalog on
// PostgreSQL (pgx driver). It needs a server: set LAKEHOUSE_TEST_POSTGRES_DSN,
// for example postgres://user:pass@127.0.0.1:5432/db?sslmode=disable.
func TestPostgresCatalog(t *testing.T) {
	dsn := os.Getenv("LAKEHOUSE_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("LAKEHOUSE_TEST_POSTGRES_DSN not set")
	}
	dir := t.TempDir()
	// A namespace of its own keeps reruns against the same database apart.
	ns := "cdc_test_" + randomSuffix(t)
	s := openTestSink(t, dir, func(c *Config) {
		c.CatalogURI = dsn
		c.Warehouse = "file://" + dir + "/warehouse"
		c.Namespace = ns
	})
	f := w1Flush(1, testSources, 1, 2, 8)
	res := mustCommit(t, s, f)
	if res.RowsWritten != flushRows(f) {
		t.Fatalf("commit: %+v", res)
	}
	diffKeys(t, flushKeys(f), scanKeys(t, s))
	res2 := mustCommit(t, s, f)
	if res2.RowsWritten != 0 || res2.RowsSkipped != flushRows(f) {
		t.Errorf("resent flush: %+v", res2)
	}
	wm, err := s.Watermarks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for src, w := range f.Watermarks {
		if wm[src] != w {
			t.Errorf("watermark %s = %+v, want %+v", src, wm[src], w)
		}
	}
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestPostgresCatalogConcurrentOpen opens several sinks at once on a fresh
// PostgreSQL database, as instances of a StatefulSet start together:
// iceberg-go creates the catalog's tables with CREATE TABLE IF NOT EXISTS,
// which fails with a unique violation on pg_type when two sessions run it
// at once, unless the start-up is serialized (cataloginit.go).
func TestPostgresCatalogConcurrentOpen(t *testing.T) {
	dsn := os.Getenv(pgtest.EnvDSN)
	if dsn == "" {
		t.Skip(pgtest.EnvDSN + " not set")
	}
	for round := range 3 {
		fresh := pgtest.FreshDB(t, dsn)
		const n = 6
		errs := make(chan error, n)
		for i := range n {
			go func() {
				dir := t.TempDir()
				s, err := Open(context.Background(), Config{DataDir: dir, Logger: quietLogger(), CatalogURI: fresh,
					Warehouse: "file://" + dir + "/warehouse"})
				if err == nil {
					err = s.Close()
				}
				if err != nil {
					err = fmt.Errorf("round %d, sink %d: %w", round, i, err)
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
}
