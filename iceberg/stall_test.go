package iceberg

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// stallingS3 is an S3-compatible server on loopback that can stop answering:
// while stalled, requests are read and then left without a reply until the
// client gives up, as with a paused or wedged object store.
type stallingS3 struct {
	srv     *httptest.Server
	stalled atomic.Bool  // every request stalls
	writes  atomic.Bool  // PUT and POST requests stall
	lists   atomic.Bool  // listings (ListObjectsV2) stall
	waiting atomic.Int64 // requests left unanswered so far
	release chan struct{}
	once    sync.Once
}

func newStallingS3(t *testing.T, bucket string) *stallingS3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	faker := gofakes3.New(backend).Server()
	st := &stallingS3{release: make(chan struct{})}
	st.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st.stalled.Load() || (st.writes.Load() && (r.Method == http.MethodPut || r.Method == http.MethodPost)) ||
			(st.lists.Load() && r.URL.Query().Has("list-type")) {
			st.waiting.Add(1)
			select {
			case <-r.Context().Done(): // the client gave up
			case <-st.release: // the test ends
			}
			return
		}
		faker.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		st.once.Do(func() { close(st.release) })
		st.srv.Close()
	})
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return st
}

func (st *stallingS3) props() map[string]string { return fakeS3Props(st.srv.URL) }

// within runs f and fails the test if it has not returned after limit (the
// call is then left running: it is what the test found hanging).
func within(t *testing.T, limit time.Duration, what string, f func()) time.Duration {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s still running after %v", what, limit)
		return 0
	}
}

// TestStalledStoreFailsWithinDeadlines: with the object store not
// answering, a commit fails at its context's deadline, and a maintenance
// pass fails each job at the maintenance timeout, so that neither the
// flusher nor the background loop hangs; once the store answers again a
// commit goes through.
func TestStalledStoreFailsWithinDeadlines(t *testing.T) {
	st := newStallingS3(t, "lake")
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Warehouse = "s3://lake/warehouse"
		c.Properties = st.props()
		c.Maintenance.Timeout = 2 * time.Second
	})
	mustCommit(t, s, w1Flush(1, testSources[:1], 1, 2, 16))
	mustCommit(t, s, w1Flush(2, testSources[:1], 3, 2, 16))

	// Staged while the store answers, committed while its writes stall:
	// the commit reads the table, then hangs writing manifests, and must
	// honour its deadline there too.
	staged, err := s.Stage(context.Background(), w1Flush(3, testSources[:1], 5, 1, 16))
	if err != nil {
		t.Fatal(err)
	}
	st.writes.Store(true)
	took := within(t, 10*time.Second, "commit of staged files on a stalled store", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err = s.CommitStaged(ctx, []sink.Staged{staged}, sink.CommitInfo{ID: 3, Reason: "test"})
	})
	t.Logf("commit of staged files on a stalled store: %v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("commit of staged files on a stalled store: %v, want a deadline error", err)
	}
	st.writes.Store(false)
	st.stalled.Store(true)
	took = within(t, 10*time.Second, "commit on a stalled store", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err = s.Commit(ctx, w1Flush(3, testSources[:1], 5, 1, 16))
	})
	t.Logf("commit on a stalled store: %v after %v", err, took.Round(time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("commit on a stalled store: %v, want a deadline error", err)
	}

	took = within(t, 10*time.Second, "maintenance on a stalled store", func() {
		err = s.Maintain(context.Background(), MaintainOptions{Orphans: true})
	})
	t.Logf("maintenance on a stalled store: %v after %v", err, took.Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || !strings.Contains(err.Error(), "pass stopped") {
		t.Errorf("maintenance on a stalled store: %v, want deadline errors", err)
	}
	if st.waiting.Load() == 0 {
		t.Fatal("no request reached the stalled store: the test tested nothing")
	}

	st.stalled.Store(false)
	mustCommit(t, s, w1Flush(3, testSources[:1], 5, 1, 16))
	if err := s.Maintain(context.Background(), MaintainOptions{}); err != nil {
		t.Errorf("maintenance after the stall: %v", err)
	}
}

// TestOrphanCleanupStalledListing: when the store stops answering while
// orphan cleanup walks a table (here only listings stall, so the pass gets
// that far, as when the store stops in the middle of a pass), the job fails
// at the maintenance timeout and the pass returns while the store is still
// stalled. iceberg-go's walk listed under context.Background, so the pass,
// and the commit lock it holds, waited until the store answered again.
func TestOrphanCleanupStalledListing(t *testing.T) {
	st := newStallingS3(t, "lake")
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Warehouse = "s3://lake/warehouse"
		c.Properties = st.props()
		// Long enough for snapshot expiry on a loaded machine, so that the
		// pass reaches orphan cleanup; compaction is not needed to get there.
		c.Maintenance.Timeout = 3 * time.Second
		c.Maintenance.CompactDisabled = true
	})
	mustCommit(t, s, w1Flush(1, testSources[:1], 1, 2, 16))
	mustCommit(t, s, w1Flush(2, testSources[:1], 3, 2, 16))

	st.lists.Store(true)
	var err error
	took := within(t, 20*time.Second, "maintenance with the store's listings stalled", func() {
		err = s.Maintain(context.Background(), MaintainOptions{Orphans: true})
	})
	t.Logf("maintenance with stalled listings: %v after %v", err, took.Round(time.Millisecond))
	if st.waiting.Load() == 0 {
		t.Fatal("no listing reached the stalled store: the test tested nothing")
	}
	if err == nil || !strings.Contains(err.Error(), "orphan cleanup") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("maintenance with stalled listings: %v, want orphan cleanup to fail at its deadline", err)
	}

	st.lists.Store(false)
	if err := s.Maintain(context.Background(), MaintainOptions{Orphans: true}); err != nil {
		t.Errorf("maintenance after the stall: %v", err)
	}
	diffKeys(t, flushKeys(w1Flush(1, testSources[:1], 1, 2, 16), w1Flush(2, testSources[:1], 3, 2, 16)), scanKeys(t, s))
}

// TestCommitLockHonoursDeadline: a commit waiting for a table's commit
// lock (held by a maintenance job, say one stuck on a stalled store) gives
// up at its own deadline instead of waiting as long as the holder does.
func TestCommitLockHonoursDeadline(t *testing.T) {
	s := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, s, w1Flush(1, testSources[:1], 1, 1, 16))
	f := w1Flush(2, testSources[:1], 2, 1, 16)
	staged, err := s.Stage(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var unlocks []func()
	for _, tb := range f.Tables {
		unlock, err := s.lockTable(context.Background(), s.Identifier(tb.Name))
		if err != nil {
			t.Fatal(err)
		}
		unlocks = append(unlocks, unlock)
	}
	within(t, 10*time.Second, "commit waiting for a held commit lock", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err = s.CommitStaged(ctx, []sink.Staged{staged}, sink.CommitInfo{ID: 2, Reason: "test"})
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "commit lock") {
		t.Errorf("commit behind a held lock: %v", err)
	}
	for _, unlock := range unlocks {
		unlock()
	}
	if _, err := s.CommitStaged(context.Background(), []sink.Staged{staged}, sink.CommitInfo{ID: 2, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
}

func TestMaintenanceTimeoutValidated(t *testing.T) {
	m, err := MaintenanceConfig{}.withDefaults()
	if err != nil || m.Timeout != DefaultMaintenanceTimeout {
		t.Fatalf("default: %v %v", m.Timeout, err)
	}
	if _, err := (MaintenanceConfig{Timeout: -time.Second}).withDefaults(); err == nil || !strings.Contains(err.Error(), "maintenance timeout") {
		t.Fatalf("negative timeout: %v", err)
	}
}
