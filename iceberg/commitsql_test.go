package iceberg

import (
	"context"
	"errors"
	"testing"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// TestCatalogCommitsOnItsBase: a catalog commit named its base
// (withCommitBase) builds the new metadata on that table's metadata, not on
// a load of the file: a property only the in-memory base has reaches the
// committed metadata, which a load of the file would not have. The
// commit is a new metadata version, and the catalog row points at it.
func TestCatalogCommitsOnItsBase(t *testing.T) {
	onEachSQLCatalog(t, func(t *testing.T, dir string, mod func(*Config)) {
		ctx := context.Background()
		s := openTestSink(t, dir, mod)
		mustCommit(t, s, w1Flush(1, testSources, 1, 1, 8))
		tbl, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		// The base: the table as loaded, plus a property held in memory
		// only.
		mb, err := table.MetadataBuilderFromBase(tbl.Metadata(), tbl.MetadataLocation())
		if err != nil {
			t.Fatal(err)
		}
		if err := mb.SetProperties(iceberg.Properties{"test.in-memory-only": "yes"}); err != nil {
			t.Fatal(err)
		}
		meta, err := mb.Build()
		if err != nil {
			t.Fatal(err)
		}
		base := table.New(tbl.Identifier(), meta, tbl.MetadataLocation(), tbl.FS, s.cat)
		txn := base.NewTransaction()
		if err := txn.SetProperties(iceberg.Properties{"test.committed": "yes"}); err != nil {
			t.Fatal(err)
		}
		committed, err := txn.Commit(withCommitBase(ctx, base))
		if err != nil {
			t.Fatal(err)
		}
		if got := committed.Properties()["test.in-memory-only"]; got != "yes" {
			t.Errorf("the commit was not built on its base: property %q, want yes", got)
		}
		if v, want := metadataVersion(committed.MetadataLocation()), metadataVersion(tbl.MetadataLocation())+1; v != want {
			t.Errorf("committed metadata version %d, want %d", v, want)
		}
		again, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		if again.MetadataLocation() != committed.MetadataLocation() || again.Properties()["test.committed"] != "yes" {
			t.Errorf("the catalog points at %s (test.committed=%q), want %s", again.MetadataLocation(),
				again.Properties()["test.committed"], committed.MetadataLocation())
		}
	})
}

// TestCatalogCommitOnAMovedBase: when another writer committed after the
// base was loaded, the commit on the base writes nothing to the catalog
// and fails as a conflict; iceberg-go's retry then commits on the latest
// table, which keeps the other writer's change.
func TestCatalogCommitOnAMovedBase(t *testing.T) {
	onEachSQLCatalog(t, func(t *testing.T, dir string, mod func(*Config)) {
		ctx := context.Background()
		s := openTestSink(t, dir, mod)
		mustCommit(t, s, w1Flush(1, testSources, 1, 1, 8))
		stale, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		other := openTestSink(t, dir, mod)
		mustCommit(t, other, w1Flush(2, testSources, 2, 1, 8))
		moved, err := s.LoadTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		oc := s.cat.(*ownedDBCatalog)
		txn := stale.NewTransaction()
		if err := txn.SetProperties(iceberg.Properties{"test.late": "yes"}); err != nil {
			t.Fatal(err)
		}
		_, _, done, err := oc.commitOnBase(ctx, stale.Identifier(), stale, nil,
			[]table.Update{table.NewSetPropertiesUpdate(iceberg.Properties{"test.late": "yes"})})
		if !done || !errors.Is(err, table.ErrCommitFailed) {
			t.Fatalf("commit on a moved base: done %v, %v; want a conflict", done, err)
		}
		if now, err := s.LoadTable(ctx, "users"); err != nil || now.MetadataLocation() != moved.MetadataLocation() {
			t.Fatalf("the refused commit moved the catalog row: %v", err)
		}
		committed, err := txn.Commit(withCommitBase(ctx, stale))
		if err != nil {
			t.Fatal(err)
		}
		if committed.Properties()["test.late"] != "yes" || committed.CurrentSnapshot().SnapshotID != moved.CurrentSnapshot().SnapshotID {
			t.Errorf("the retry lost a change: test.late=%q, snapshot %d, want the other writer's %d",
				committed.Properties()["test.late"], committed.CurrentSnapshot().SnapshotID, moved.CurrentSnapshot().SnapshotID)
		}
		diffKeys(t, flushKeys(w1Flush(1, testSources, 1, 1, 8), w1Flush(2, testSources, 2, 1, 8)), scanKeys(t, s))
	})
}

func TestMetadataVersion(t *testing.T) {
	for loc, want := range map[string]int{
		"file:///w/t/metadata/00012-6f1b1c2e-8a3d-4c1e-9a51-0d1f3b6c7e8a.metadata.json": 12,
		"s3://b/t/metadata/00000-6f1b1c2e-8a3d-4c1e-9a51-0d1f3b6c7e8a.gz.metadata.json": 0,
		"file:///w/t/metadata/v3.metadata.json":                                         -1,
		"file:///w/t/metadata/12-not-a-uuid.metadata.json":                              -1,
		"file:///w/t/metadata/": -1,
	} {
		if got := metadataVersion(loc); got != want {
			t.Errorf("metadataVersion(%q) = %d, want %d", loc, got, want)
		}
	}
}
