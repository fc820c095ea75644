package iceberg

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// changeFlush is a flush of one change of key k by src.
func changeFlush(tableName, src string, batch, seq, ts uint64, k string, op codec.Op, after string) *sink.Flush {
	e := codec.Entry{Sequence: seq, Timestamp: ts, Op: op, Table: []byte(tableName), RowID: []byte(k)}
	if after != "" {
		e.After = []byte(after)
	}
	return &sink.Flush{ID: batch, Time: time.Now(), Tables: []sink.Table{{Name: tableName, Rows: []sink.Row{{SourceID: src, BatchSeq: batch, Entry: e}}}}}
}

func mirrorKeys(t *testing.T, s *Sink, name string) map[string]mirrorRow {
	t.Helper()
	tbl, err := s.LoadMirrorTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return readMirror(t, tbl)
}

// TestMirrorDeletesSurviveRestart: a delete is durable: after a restart (a
// new Sink, its index loaded from the table), a change older than the
// delete does not bring the row back, even after orphan cleanup ran over
// the table's files. Before tombstone files, the restarted writer forgot
// the delete and the stale insert resurrected the row.
func TestMirrorDeletesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openTestSink(t, dir, mirrorOn)
	mustCommit(t, s, changeFlush("t", "a", 1, 1, 1000, "k", codec.OpInsert, `{"v":1}`))
	mustCommit(t, s, changeFlush("t", "a", 2, 2, 3000, "k", codec.OpDelete, ""))
	mustCommit(t, s, changeFlush("t", "a", 3, 3, 3000, "other", codec.OpInsert, `{"v":5}`))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestSink(t, dir, func(c *Config) {
		c.Mirror = true
		c.Maintenance.OrphanAge = time.Second
	})
	time.Sleep(1100 * time.Millisecond) // every file is past the orphan age
	if err := s.Maintain(context.Background(), MaintainOptions{Orphans: true}); err != nil {
		t.Fatal(err)
	}
	// Another source's change, older than the delete, arrives after the restart.
	mustCommit(t, s, changeFlush("t", "b", 1, 1, 2500, "k", codec.OpInsert, `{"v":9}`))
	if got := mirrorKeys(t, s, "t"); len(got) != 1 || got["other"].values["v"] != float64(5) {
		t.Fatalf("after the restart a change older than the delete brought the row back: %+v", got)
	}
	if tot := s.MirrorTotals(); tot.StaleChanges != 1 || tot.IndexKeys != 2 || tot.IndexTombstones != 1 {
		t.Errorf("stale changes %d (want 1), index keys %d (2), tombstones %d (1)", tot.StaleChanges, tot.IndexKeys, tot.IndexTombstones)
	}
	// A newer insert brings it back.
	mustCommit(t, s, changeFlush("t", "b", 2, 2, 3500, "k", codec.OpInsert, `{"v":10}`))
	if got := mirrorKeys(t, s, "t"); got["k"].values["v"] != float64(10) {
		t.Fatalf("a newer insert did not apply: %+v", got)
	}
	if tot := s.MirrorTotals(); tot.IndexKeys != 2 || tot.IndexTombstones != 0 {
		t.Errorf("index keys %d, tombstones %d; want 2, 0", tot.IndexKeys, tot.IndexTombstones)
	}
}

// TestMirrorTombstoneFilesMerge: tombstone files are listed in the table
// property, merged into one once maxMirrorTombstoneFiles are listed, and
// every tombstone (also of re-inserted and re-deleted keys) holds after a
// restart.
func TestMirrorTombstoneFilesMerge(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTestSink(t, dir, mirrorOn)
	var batch uint64
	commit := func(ts uint64, k string, op codec.Op) {
		batch++
		after := ""
		if op != codec.OpDelete {
			after = fmt.Sprintf(`{"ts":%d}`, ts)
		}
		mustCommit(t, s, changeFlush("t", "a", batch, batch, ts, k, op, after))
	}
	maxFiles := 0
	for i := range 2*maxMirrorTombstoneFiles + 3 {
		k := fmt.Sprintf("k%d", i)
		commit(uint64(10_000+i*10), k, codec.OpInsert)
		commit(uint64(10_001+i*10), k, codec.OpDelete)
		tbl, err := s.LoadMirrorTable(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		files, err := tombstoneFiles(tbl.Properties())
		if err != nil {
			t.Fatal(err)
		}
		maxFiles = max(maxFiles, len(files))
		for _, f := range files {
			if _, err := os.Stat(strings.TrimPrefix(f.Path, "file://")); err != nil {
				t.Fatalf("listed tombstone file: %v", err)
			}
		}
	}
	if maxFiles != maxMirrorTombstoneFiles {
		t.Errorf("up to %d tombstone files listed, want %d", maxFiles, maxMirrorTombstoneFiles)
	}
	// k0 comes back and goes again: its newest tombstone counts.
	commit(50_000, "k0", codec.OpInsert)
	commit(50_001, "k0", codec.OpDelete)
	s.Close()

	s = openTestSink(t, dir, mirrorOn)
	for i := range 2*maxMirrorTombstoneFiles + 3 {
		commit(uint64(10_000+i*10), fmt.Sprintf("k%d", i), codec.OpUpdate) // each older than its delete
	}
	commit(50_000, "k0", codec.OpUpdate) // older than k0's second delete
	if got := mirrorKeys(t, s, "t"); len(got) != 0 {
		t.Fatalf("changes older than their keys' deletes came back after a restart: %d rows", len(got))
	}
}

// TestMirrorTombstoneRetention: a tombstone past the retention (relative to
// the newest event time) is forgotten; a change older than it then brings
// the row back, as documented.
func TestMirrorTombstoneRetention(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ret := func(c *Config) { c.Mirror = true; c.MirrorTombstoneRetention = time.Minute }
	s := openTestSink(t, dir, ret)
	mustCommit(t, s, changeFlush("t", "a", 1, 1, 1_000, "k", codec.OpDelete, ""))
	mustCommit(t, s, changeFlush("t", "a", 2, 2, 30_000, "j", codec.OpDelete, ""))
	tbl, _ := s.LoadMirrorTable(ctx, "t")
	if files, _ := tombstoneFiles(tbl.Properties()); len(files) != 2 {
		t.Fatalf("tombstone files %+v", files)
	}
	// Event time moves 2 minutes on: k's tombstone (and j's) are past it.
	mustCommit(t, s, changeFlush("t", "a", 3, 3, 121_000, "x", codec.OpInsert, `{"v":1}`))
	tbl, _ = s.LoadMirrorTable(ctx, "t")
	if files, _ := tombstoneFiles(tbl.Properties()); len(files) != 0 {
		t.Fatalf("tombstone files after the retention: %+v", files)
	}
	s.Close()
	s = openTestSink(t, dir, ret)
	mustCommit(t, s, changeFlush("t", "b", 1, 1, 500, "k", codec.OpInsert, `{"v":2}`))
	if got := mirrorKeys(t, s, "t"); len(got) != 2 {
		t.Fatalf("a change older than a forgotten tombstone: %+v", got)
	}
	// Within the retention, tombstones hold.
	mustCommit(t, s, changeFlush("t", "b", 2, 2, 122_000, "x", codec.OpDelete, ""))
	s.Close()
	s = openTestSink(t, dir, ret)
	mustCommit(t, s, changeFlush("t", "b", 3, 3, 121_500, "x", codec.OpUpdate, `{"v":3}`))
	if got := mirrorKeys(t, s, "t"); len(got) != 1 {
		t.Fatalf("a tombstone within the retention was forgotten: %+v", got)
	}
}
