package iceberg

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// TestS3Compatible runs a round trip against gofakes3, an in-process
// S3-compatible server on loopback: s3:// warehouse, endpoint override,
// path-style requests and static credentials.
func TestS3Compatible(t *testing.T) {
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	srv := httptest.NewServer(faker.Server())
	t.Cleanup(srv.Close)
	if err := backend.CreateBucket("lake"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	dir := t.TempDir()
	s := openTestSink(t, dir, func(c *Config) {
		c.Warehouse = "s3://lake/warehouse"
		c.Properties = fakeS3Props(srv.URL)
	})
	ctx := context.Background()
	f := w1Flush(1, testSources[:2], 1, 2, 16)
	res := mustCommit(t, s, f)
	if res.RowsWritten != flushRows(f) || len(res.Paths) != len(f.Tables) {
		t.Fatalf("commit: %+v", res)
	}
	for _, p := range res.Paths {
		if !strings.HasPrefix(p, "s3://lake/warehouse/cdc.db/") {
			t.Errorf("data file %s not in the bucket's warehouse", p)
		}
	}
	diffKeys(t, flushKeys(f), scanKeys(t, s))

	// The objects really are in the fake server's bucket.
	list, err := backend.ListBucket("lake", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var parquetFiles, metadataFiles int
	for _, o := range list.Contents {
		switch {
		case strings.HasSuffix(o.Key, ".parquet"):
			parquetFiles++
		case strings.HasSuffix(o.Key, ".metadata.json"):
			metadataFiles++
		}
	}
	if parquetFiles != len(f.Tables) || metadataFiles < len(f.Tables) {
		t.Errorf("bucket holds %d parquet and %d metadata files", parquetFiles, metadataFiles)
	}

	// Idempotence holds on S3 too.
	res2 := mustCommit(t, s, f)
	if res2.RowsWritten != 0 || res2.RowsSkipped != flushRows(f) {
		t.Errorf("resent flush: %+v", res2)
	}
	if _, err := s.Watermarks(ctx); err != nil {
		t.Fatal(err)
	}
}

// fakeS3Props are the sink's S3 properties for a test's in-process S3
// server at endpoint (path-style addressing, static credentials).
func fakeS3Props(endpoint string) map[string]string {
	return map[string]string{
		"s3.endpoint":                 endpoint,
		"s3.region":                   "us-east-1",
		"s3.access-key-id":            "test-key",
		"s3.secret-access-key":        "test-secret",
		"s3.force-virtual-addressing": "false",
	}
}
