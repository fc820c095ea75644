package iceberg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dot-do/lakehouse-rpc/sink"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTestSink(t, dir, nil)
	ctx := context.Background()

	var flushes []*sink.Flush
	for i := uint64(0); i < 3; i++ {
		flushes = append(flushes, w1Flush(i+1, testSources, 1+2*i, 2, 24))
	}
	for _, f := range flushes {
		res := mustCommit(t, s, f)
		if res.RowsWritten != flushRows(f) || res.RowsSkipped != 0 {
			t.Fatalf("flush %d: wrote %d skipped %d, want %d and 0", f.ID, res.RowsWritten, res.RowsSkipped, flushRows(f))
		}
		if res.Tables != 8 {
			t.Errorf("flush %d: %d tables committed, want 8", f.ID, res.Tables)
		}
		if len(res.Paths) < 8 || res.BytesWritten <= 0 {
			t.Errorf("flush %d: paths %d bytes %d", f.ID, len(res.Paths), res.BytesWritten)
		}
		for _, p := range res.Paths {
			local := strings.TrimPrefix(p, "file://")
			st, err := os.Stat(local)
			if err != nil {
				t.Errorf("data file %s: %v", p, err)
				continue
			}
			if !strings.HasPrefix(local, filepath.Join(dir, "warehouse")+"/") || !strings.HasSuffix(local, ".parquet") {
				t.Errorf("data file %s outside the warehouse", p)
			}
			if st.Size() == 0 {
				t.Errorf("data file %s is empty", p)
			}
		}
	}

	diffKeys(t, flushKeys(flushes...), scanKeys(t, s))

	// Watermarks, table listing and snapshot summaries.
	wm, err := s.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range testSources {
		if got, want := wm[src.id], flushes[2].Watermarks[src.id]; got != want {
			t.Errorf("watermark %s = %+v, want %+v", src.id, got, want)
		}
	}
	infos, err := s.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 8 {
		t.Fatalf("%d tables, want 8", len(infos))
	}
	for _, info := range infos {
		if info.Name != info.OriginalName || info.Snapshots != 3 || info.Files < 3 {
			t.Errorf("table info %+v", info)
		}
	}
	tbl, err := s.LoadTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	sum := tbl.CurrentSnapshot().Summary.Properties
	if sum[SummaryFlushID] != "3" || sum[SummaryTrigger] != "test" || sum[SummaryRows] == "" ||
		!strings.Contains(sum[SummaryWatermarks], `"do-alpha":{"batch_seq":6,`) {
		t.Errorf("snapshot summary %v", sum)
	}
	props := tbl.Properties()
	if props["write.parquet.compression-codec"] != "zstd" || props["write.target-file-size-bytes"] != "134217728" {
		t.Errorf("table properties %v", props)
	}
	if spec := tbl.Spec(); spec.NumFields() != 1 || tbl.SortOrder().Len() != 2 {
		t.Errorf("spec %v, sort order %v", spec, tbl.SortOrder())
	}

	// Times: event_time from the entry's milliseconds, ingest_time the flush time.
	recs, err := s.Scan(ctx, "orders", 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 {
		t.Fatalf("limit 5 scan returned %d rows", len(recs))
	}
	for _, r := range recs {
		if r.EventTime.UnixMilli() < 1700000000000 || r.IngestTime.IsZero() || r.IngestTime.Year() != 2026 {
			t.Errorf("times of %+v", r)
		}
	}
}

func TestIdempotence(t *testing.T) {
	ctx := context.Background()

	t.Run("same flush twice", func(t *testing.T) {
		s := openTestSink(t, t.TempDir(), nil)
		f := w1Flush(1, testSources, 1, 2, 16)
		first := mustCommit(t, s, f)
		second := mustCommit(t, s, f)
		if first.RowsWritten != flushRows(f) || second.RowsWritten != 0 || second.RowsSkipped != flushRows(f) ||
			second.Tables != 0 || len(second.Paths) != 0 {
			t.Fatalf("first %+v second %+v", first, second)
		}
		diffKeys(t, flushKeys(f), scanKeys(t, s))
	})

	t.Run("overlapping flush", func(t *testing.T) {
		// Batches 1-2 committed, then a flush with batches 2-3: batch 2 is
		// skipped, batch 3 written.
		s := openTestSink(t, t.TempDir(), nil)
		f1 := w1Flush(1, testSources, 1, 2, 16)
		f2 := w1Flush(2, testSources, 2, 2, 16)
		mustCommit(t, s, f1)
		res := mustCommit(t, s, f2)
		half := flushRows(f2) / 2
		if res.RowsWritten != half || res.RowsSkipped != half {
			t.Fatalf("overlap: %+v, want %d written and skipped", res, half)
		}
		diffKeys(t, flushKeys(f1, w1Flush(3, testSources, 3, 1, 16)), scanKeys(t, s))
	})

	t.Run("partial multi-table flush then retry and restart", func(t *testing.T) {
		dir := t.TempDir()
		var failAt atomic.Value // table name to fail, or ""
		failAt.Store("")
		hook := func(c *Config) {
			c.BeforeTableCommit = func(table string) error {
				if table == failAt.Load().(string) {
					return errors.New("injected failure")
				}
				return nil
			}
		}
		s := openTestSink(t, dir, hook)
		f := w1Flush(7, testSources, 1, 2, 16)
		third := f.Tables[2].Name
		failAt.Store(third)
		res, err := s.Commit(ctx, f)
		if err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("commit with failing table 3: %v", err)
		}
		// Every other table commits (tables are independent, see
		// commitparallel.go); the retry commits the third alone.
		thirdRows := int64(len(f.Tables[2].Rows))
		if res.Tables != len(f.Tables)-1 || res.RowsWritten != flushRows(f)-thirdRows || !strings.Contains(err.Error(), strconv.Quote(third)) {
			t.Fatalf("partial result %+v (%v)", res, err)
		}
		failAt.Store("")
		res2 := mustCommit(t, s, f)
		if res2.RowsWritten != thirdRows || res2.RowsSkipped != res.RowsWritten || res2.Tables != 1 {
			t.Fatalf("retry result %+v after %+v", res2, res)
		}
		diffKeys(t, flushKeys(f), scanKeys(t, s))
		wmBefore, err := s.Watermarks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		// A restarted process sees the same watermarks and skips a resent flush.
		s2 := openTestSink(t, dir, nil)
		wm, err := s2.Watermarks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(wm) != len(testSources) {
			t.Fatalf("watermarks after reopen: %v", wm)
		}
		for src, w := range f.Watermarks {
			if wm[src] != w || wmBefore[src] != w {
				t.Errorf("watermark %s after reopen %+v (before %+v), want %+v", src, wm[src], wmBefore[src], w)
			}
		}
		res3 := mustCommit(t, s2, f)
		if res3.RowsWritten != 0 || res3.RowsSkipped != flushRows(f) {
			t.Fatalf("resent flush after restart: %+v", res3)
		}
		diffKeys(t, flushKeys(f), scanKeys(t, s2))
	})
}

// TestConcurrentWriters has two sinks (two "instances") share one catalog
// and commit different sources to the same tables at the same time: the
// optimistic-commit conflicts are replayed and no row or watermark is lost.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	a := openTestSink(t, dir, nil)
	b := openTestSink(t, dir, nil)
	// Create the tables first so both instances race on appends only.
	mustCommit(t, a, w1Flush(1, testSources[:1], 1, 1, 8))
	all := []*sink.Flush{w1Flush(1, testSources[:1], 1, 1, 8)}
	const rounds = 3
	errs := make(chan error, 2)
	var flushesA, flushesB []*sink.Flush
	for r := uint64(0); r < rounds; r++ {
		flushesA = append(flushesA, w1Flush(10+r, testSources[:1], 2+r, 1, 8))
		flushesB = append(flushesB, w1Flush(20+r, testSources[1:2], 1+r, 1, 8))
	}
	run := func(s *Sink, fs []*sink.Flush) {
		for _, f := range fs {
			if _, err := s.Commit(context.Background(), f); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}
	go run(a, flushesA)
	go run(b, flushesB)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	all = append(all, flushesA...)
	all = append(all, flushesB...)
	diffKeys(t, flushKeys(all...), scanKeys(t, a))
	wm, err := b.Watermarks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if wm[testSources[0].id].BatchSeq != 1+rounds || wm[testSources[1].id].BatchSeq != rounds {
		t.Errorf("watermarks after concurrent commits: %v", wm)
	}
	// Every table holds both sources' watermarks.
	infos, err := a.Tables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		if len(info.Watermarks) != 2 {
			t.Errorf("table %s watermarks %v", info.Name, info.Watermarks)
		}
	}
}
