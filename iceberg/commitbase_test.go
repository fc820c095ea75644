package iceberg

import (
	"context"
	"os"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// onEachSQLCatalog runs test on the embedded SQLite catalog and on
// PostgreSQL (skipped without a server): the commit reads the catalog's
// table rows with a query of its own. mod configures a sink of dir for the
// catalog, mirrors on.
func onEachSQLCatalog(t *testing.T, test func(t *testing.T, dir string, mod func(*Config))) {
	t.Run("sqlite", func(t *testing.T) {
		test(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorPartitionBuckets = 2 })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
		dir := t.TempDir()
		test(t, dir, func(c *Config) {
			c.Mirror = true
			c.MirrorPartitionBuckets = 2
			c.CatalogURI = dsn
			c.Warehouse = "file://" + dir + "/warehouse"
		})
	})
}

// TestCommitStartsFromTheStagedTables: a commit whose tables nothing
// changed since its stage loads none of them (changelogs and mirrors) from
// the catalog: it starts from the tables its stage loaded. Every row is
// committed once and the next stage sees the commit.
func TestCommitStartsFromTheStagedTables(t *testing.T) {
	onEachSQLCatalog(t, testCommitStartsFromTheStagedTables)
}

func testCommitStartsFromTheStagedTables(t *testing.T, dir string, mod func(*Config)) {
	ctx := context.Background()
	s := openTestSink(t, dir, mod)
	f1 := w1Flush(1, testSources, 1, 2, 16)
	f2 := w1Flush(2, testSources, 3, 2, 16)
	for _, f := range []*sink.Flush{f1, f2} {
		st, err := s.Stage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		tables := len(s.stageTables)
		if tables == 0 || f.ID == 2 && len(s.stageMirrorTables) != tables {
			// The first commit creates the mirrors; the second's stage
			// finds them.
			t.Fatalf("flush %d: the stage cached %d tables and %d mirrors", f.ID, tables, len(s.stageMirrorTables))
		}
		before := s.CatalogTotals().Loads
		res, err := s.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: f.ID, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		loads := s.CatalogTotals().Loads - before
		// The first commit creates each mirror, and loads it to do so.
		want := int64(0)
		if f.ID == 1 {
			want = int64(tables)
		}
		if loads != want {
			t.Errorf("flush %d: the commit of %d tables loaded %d tables from the catalog, want %d", f.ID, tables, loads, want)
		}
		if res.Tables != tables {
			t.Errorf("flush %d: %d tables committed, want %d", f.ID, res.Tables, tables)
		}
	}
	again, err := s.Stage(ctx, f2)
	if err != nil {
		t.Fatal(err)
	}
	if again.StagedRows() != 0 {
		t.Errorf("flush 2 staged again after its commit: %d rows, want 0", again.StagedRows())
	}
	diffKeys(t, flushKeys(f1, f2), scanKeys(t, s))
	checkMirrorsMatch(t, s, f1, f2)
}

// TestCommitReloadsATableMovedSinceStage: when another writer committed a
// table after the stage loaded it, the commit loads it again and decides
// against the latest watermarks. Here another sink committed the very
// batches this one staged: starting from the stage's table, whose
// watermarks predate that commit, would have added every row a second time.
func TestCommitReloadsATableMovedSinceStage(t *testing.T) {
	onEachSQLCatalog(t, testCommitReloadsATableMovedSinceStage)
}

func testCommitReloadsATableMovedSinceStage(t *testing.T, dir string, mod func(*Config)) {
	ctx := context.Background()
	s := openTestSink(t, dir, mod)
	f0 := w1Flush(1, testSources, 1, 1, 8)
	if _, err := s.Commit(ctx, f0); err != nil {
		t.Fatal(err)
	}
	f1 := w1Flush(2, testSources, 2, 2, 16)
	st, err := s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	other := openTestSink(t, dir, mod)
	if _, err := other.Commit(ctx, w1Flush(2, testSources, 2, 2, 16)); err != nil {
		t.Fatal(err)
	}
	before := s.CatalogTotals().Loads
	res, err := s.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: 2, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsWritten != 0 {
		t.Errorf("the commit wrote %d rows that the other sink had committed, want 0", res.RowsWritten)
	}
	if loads := s.CatalogTotals().Loads - before; loads == 0 {
		t.Error("the commit loaded no table, though another sink had committed every one since the stage")
	}
	diffKeys(t, flushKeys(f0, f1), scanKeys(t, s))
	checkMirrorsMatch(t, s, f0, f1)
}

// checkMirrorsMatch compares every table's mirror with the model of the
// flushes' rows of that table.
func checkMirrorsMatch(t *testing.T, s *Sink, flushes ...*sink.Flush) {
	t.Helper()
	models := make(map[string]mirrorModel)
	for _, f := range flushes {
		for _, tb := range f.Tables {
			m, ok := models[tb.Name]
			if !ok {
				m = mirrorModel{}
				models[tb.Name] = m
			}
			for _, r := range tb.Rows {
				m.apply(r.SourceID, r)
			}
		}
	}
	for name, m := range models {
		tbl, err := s.LoadMirrorTable(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		checkMirror(t, readMirror(t, tbl), m)
	}
}
