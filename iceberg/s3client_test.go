package iceberg

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestS3ClientShared: the sink's S3 IOs share one HTTP client, so commits
// reuse connections instead of opening new ones for every table load,
// manifest and metadata file (iceberg-go's default: about 50 connections a
// commit, each left open until its idle timeout), and Close closes them.
func TestS3ClientShared(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("lake"); err != nil {
		t.Fatal(err)
	}
	var open, opened atomic.Int64
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
			opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Warehouse = "s3://lake/warehouse"
		c.Properties = fakeS3Props(srv.URL)
	})
	const commits = 8
	flushes := make([]*sink.Flush, 0, commits)
	for i := uint64(1); i <= commits; i++ {
		f := w1Flush(i, testSources[:2], 2*i-1, 2, 16)
		flushes = append(flushes, f)
		mustCommit(t, s, f)
	}
	t.Logf("%d commits: %d connections opened, %d open", commits, opened.Load(), open.Load())
	if opened.Load() >= commits {
		t.Errorf("%d commits opened %d connections to the store: they are not reused", commits, opened.Load())
	}
	// Maintenance and a scan, then Close: it closes what they left open.
	if err := s.Maintain(t.Context(), MaintainOptions{Orphans: true}); err != nil {
		t.Fatal(err)
	}
	diffKeys(t, flushKeys(flushes...), scanKeys(t, s))
	if s.s3conn == nil || s.s3conn.open() == 0 {
		t.Fatalf("the sink's S3 client tracks no connection")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for open.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to the store still open after the sink closed", open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestS3ConfigInvalid: a bad S3 property fails Open, naming the property,
// rather than every later table load.
func TestS3ConfigInvalid(t *testing.T) {
	_, err := Open(t.Context(), Config{DataDir: t.TempDir(), Logger: quietLogger(),
		Warehouse: "s3://lake/warehouse", Properties: map[string]string{"s3.connect-timeout": "soon"}})
	if err == nil || !strings.Contains(err.Error(), "s3.connect-timeout") {
		t.Fatalf("Open with s3.connect-timeout=soon: %v, want an error naming it", err)
	}
}
