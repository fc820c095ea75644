package iceberg

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMirrorNewKeysNoDeletes: a key the table holds no row of (new, or
// deleted) gets no equality delete; a key with a row does. Across a
// restart, a replay, a compaction and another writer's commits, no key is
// duplicated or brought back, and the mirror equals the model throughout.
// On the embedded (SQLite) catalog and on PostgreSQL (when
// LAKEHOUSE_TEST_POSTGRES_DSN is set); on PostgreSQL also in multi-instance
// mode (ExclusiveMaintenance), where every key gets a delete, since another
// instance may commit rows this one's index does not hold.
func TestMirrorNewKeysNoDeletes(t *testing.T) {
	postgres := func(exclusive bool) func(t *testing.T, dir string) func(*Config) {
		return func(t *testing.T, dir string) func(*Config) {
			dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
			return func(c *Config) {
				c.CatalogURI = dsn
				c.Warehouse = "file://" + dir + "/warehouse"
				c.ExclusiveMaintenance = exclusive
			}
		}
	}
	for _, tc := range []struct {
		name     string
		catalog  func(t *testing.T, dir string) func(*Config)
		everyKey bool // every key gets a delete
	}{
		{"sqlite", func(*testing.T, string) func(*Config) { return func(*Config) {} }, false},
		{"postgres", postgres(false), false},
		{"postgres multi-instance", postgres(true), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			testMirrorNewKeys(t, dir, tc.catalog(t, dir), tc.everyKey)
		})
	}
}

// testMirrorNewKeys is TestMirrorNewKeysNoDeletes on one catalog (cat sets
// it up). With everyKey every commit that changes rows adds a delete file.
func testMirrorNewKeys(t *testing.T, dir string, cat func(*Config), everyKey bool) {
	ctx := context.Background()
	mod := func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = 4
		c.MirrorCompactDeleteFiles = -1
		cat(c)
	}
	s := openTestSink(t, dir, mod)
	model := mirrorModel{}
	var acked []*sink.Flush
	commit := func(s *Sink, f *sink.Flush) {
		t.Helper()
		applyFlush(model, f)
		mustCommit(t, s, f)
		acked = append(acked, f)
	}
	// deletes checks the mirror against the model and returns its delete
	// files and equality delete rows.
	deletes := func(s *Sink) (files, rows int) {
		t.Helper()
		tbl, err := s.LoadMirrorTable(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		checkMirror(t, readMirror(t, tbl), model)
		if t.Failed() {
			t.FailNow()
		}
		if snap := tbl.CurrentSnapshot(); snap != nil && snap.Summary != nil {
			rows, _ = strconv.Atoi(snap.Summary.Properties["total-equality-deletes"])
		}
		return mirrorDeleteFiles(tbl), rows
	}
	deleteFiles := func(s *Sink) int {
		t.Helper()
		n, _ := deletes(s)
		return n
	}
	deleteRows := func(s *Sink) int {
		t.Helper()
		_, n := deletes(s)
		return n
	}
	// want checks, with the new keys skipped, the number of delete files,
	// and with every key getting a delete, the number of delete rows (one
	// per change applied).
	want := func(s *Sink, files, rows int, what string) {
		t.Helper()
		if !everyKey {
			if got := deleteFiles(s); got != files {
				t.Fatalf("%s: %d delete files, want %d", what, got, files)
			}
		} else if got := deleteRows(s); got != rows {
			t.Fatalf("%s: %d equality delete rows, want %d (one per change)", what, got, rows)
		}
	}
	commit(s, updateFlush(1, "t", []string{"a", "b", "c"}, 1))
	commit(s, updateFlush(2, "t", []string{"d", "e"}, 2))
	want(s, 0, 5, "new keys only")
	commit(s, updateFlush(3, "t", []string{"a", "f"}, 3))
	want(s, 1, 7, "one key updated")
	del := updateFlush(4, "t", []string{"b"}, 4)
	del.Tables[0].Rows[0].Op, del.Tables[0].Rows[0].After = codec.OpDelete, nil
	commit(s, del)
	want(s, 2, 8, "a key deleted")
	commit(s, updateFlush(5, "t", []string{"b"}, 5)) // its row is gone: no delete
	want(s, 2, 9, "a deleted key inserted again")

	// Restart: the index is reloaded from the table; a replay of what was
	// acknowledged applies nothing; the keys it holds get deletes.
	s = openTestSink(t, dir, mod)
	snapshots := func() int {
		t.Helper()
		tbl, err := s.LoadMirrorTable(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		return len(tbl.Metadata().Snapshots())
	}
	snaps := snapshots()
	for _, f := range acked {
		mustCommit(t, s, f)
	}
	if got := snapshots(); got != snaps {
		t.Fatalf("the replay added mirror snapshots: %v -> %v", snaps, got)
	}
	commit(s, updateFlush(6, "t", []string{"c", "g"}, 6))
	want(s, 3, 11, "after the restart, one known key updated")

	// A compaction keeps the rows: new keys still get no delete.
	if _, err := s.compactMirror(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	n, r := deletes(s)
	commit(s, updateFlush(7, "t", []string{"h"}, 7))
	want(s, n, r+1, "a new key after a compaction")
	commit(s, updateFlush(8, "t", []string{"h"}, 8))
	want(s, n+1, r+2, "that key updated")

	// Another writer inserts x and y, which this sink's index does not
	// hold: the index is reloaded from the table first, so both get a
	// delete and neither is duplicated.
	other := openTestSink(t, dir, mod)
	f := updateFlush(9, "t", []string{"x", "y"}, 9)
	for i := range f.Tables[0].Rows {
		f.Tables[0].Rows[i].SourceID = "other"
	}
	commit(other, f)
	n = deleteFiles(s)
	commit(s, updateFlush(10, "t", []string{"x"}, 10))
	commit(s, updateFlush(11, "t", []string{"y", "z"}, 11))
	if got := deleteFiles(s); got < n+2 {
		t.Fatalf("%d delete files: another writer's keys were written without deletes", got)
	}
}
