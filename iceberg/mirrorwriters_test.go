package iceberg

import (
	"context"
	"os"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMirrorOtherWriterNewerRow: two sinks write one mirror directly (no
// elected committer): two instances in multi-instance mode with
// --elected-committer=false, or a second process on an embedded catalog.
// a commits k1 at 1 s, b commits k1 at 3 s, then a commits k1 at 2 s: a's
// change is stale (the model keeps b's row). a's index missed b's commit;
// it took the change for new and replaced b's newer row (the mirror held
// k1 at 2 s) until every writer's index was reloaded when the mirror has
// another writer's commit since its own.
func TestMirrorOtherWriterNewerRow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		catalog func(t *testing.T) func(*Config)
	}{
		{"sqlite, two processes", func(t *testing.T) func(*Config) {
			dir := t.TempDir()
			return func(c *Config) { c.DataDir = dir }
		}},
		{"postgres, multi-instance", func(t *testing.T) func(*Config) {
			dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
			wh := "file://" + t.TempDir() + "/warehouse"
			return func(c *Config) { c.CatalogURI, c.Warehouse, c.ExclusiveMaintenance = dsn, wh, true }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat := tc.catalog(t)
			ctx := context.Background()
			open := func() *Sink {
				return openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; cat(c) })
			}
			a, b := open(), open()
			models := newMirrorModels()
			commit := func(s *Sink, src string, batch, entry, eventMs uint64, after string) {
				t.Helper()
				tb := sink.Table{Name: "users", Rows: []sink.Row{{SourceID: src, BatchSeq: batch, Entry: codec.Entry{
					Sequence: entry, Timestamp: eventMs, Table: []byte("users"), RowID: []byte("k1"), Op: codec.OpUpdate, After: []byte(after)}}}}
				models.apply(&sink.Flush{Tables: []sink.Table{tb}})
				if _, err := s.commitMirror(ctx, "users", []*mirrorPart{foldMirror(&tb, nil, nil)}, sink.CommitInfo{ID: batch}, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			commit(a, "src-a", 1, 1, 1_000, `{"v":1}`)
			commit(b, "src-b", 1, 1, 3_000, `{"v":3}`)
			commit(a, "src-a", 2, 2, 2_000, `{"v":2}`) // older than b's row
			models.check(t, a, "users")
		})
	}
}
