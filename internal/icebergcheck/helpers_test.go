package icebergcheck

import (
	"context"
	"database/sql"
	"iter"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	"github.com/apache/iceberg-go/table"
	_ "modernc.org/sqlite"
)

// newCatalog returns a SQL catalog on SQLite with a local warehouse, as
// the lakehouse's default.
func newCatalog(t *testing.T) catalog.Catalog {
	t.Helper()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat, err := sqlcat.NewCatalog("test", db, sqlcat.SQLite, iceberg.Properties{
		"warehouse": "file://" + filepath.ToSlash(filepath.Join(dir, "warehouse")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.CreateNamespace(context.Background(), table.Identifier{"ns"}, nil); err != nil {
		t.Fatal(err)
	}
	return cat
}

func createTable(t *testing.T, cat catalog.Catalog, name string, sc *iceberg.Schema, spec *iceberg.PartitionSpec) *table.Table {
	t.Helper()
	opts := []catalog.CreateTableOpt{catalog.WithProperties(iceberg.Properties{"format-version": "2"})}
	if spec != nil {
		opts = append(opts, catalog.WithPartitionSpec(spec))
	}
	tbl, err := cat.CreateTable(context.Background(), table.Identifier{"ns", name}, sc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// records returns JSON rows as one Arrow record of the table's schema, or
// of the schema of the given field ids.
func records(t *testing.T, sc *iceberg.Schema, rowsJSON string, ids ...int) iter.Seq2[arrow.RecordBatch, error] {
	t.Helper()
	if len(ids) > 0 {
		var err error
		if sc, err = sc.Select(true, namesOf(t, sc, ids)...); err != nil {
			t.Fatal(err)
		}
	}
	asc, err := table.SchemaToArrowSchema(sc, nil, true, false)
	if err != nil {
		t.Fatal(err)
	}
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, asc, strings.NewReader(rowsJSON))
	if err != nil {
		t.Fatalf("records %s: %v", rowsJSON, err)
	}
	return func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) }
}

func namesOf(t *testing.T, sc *iceberg.Schema, ids []int) []string {
	var out []string
	for _, id := range ids {
		n, ok := sc.FindColumnName(id)
		if !ok {
			t.Fatalf("no field %d", id)
		}
		out = append(out, n)
	}
	return out
}

// rowDelta commits, in one snapshot, data rows (JSON, the table schema) and
// equality deletes on field ids eqIDs (JSON rows of those fields and, for a
// partitioned table, the partition source fields partIDs), as the mirror
// writer does. Empty JSON skips a part.
func rowDelta(t *testing.T, tbl *table.Table, dataJSON, deleteJSON string, eqIDs, partIDs []int) *table.Table {
	t.Helper()
	ctx := context.Background()
	tx := tbl.NewTransaction()
	rd := tx.NewRowDelta(nil)
	if dataJSON != "" {
		asc, err := table.SchemaToArrowSchema(tbl.Schema(), nil, true, false)
		if err != nil {
			t.Fatal(err)
		}
		for df, err := range table.WriteRecords(ctx, tbl, asc, records(t, tbl.Schema(), dataJSON)) {
			if err != nil {
				t.Fatal(err)
			}
			rd.AddRows(df)
		}
	}
	if deleteJSON != "" {
		dels, err := tx.WriteEqualityDeletes(ctx, eqIDs, records(t, tbl.Schema(), deleteJSON, append(eqIDs, partIDs...)...))
		if err != nil {
			t.Fatal(err)
		}
		rd.AddDeletes(dels...)
	}
	if err := rd.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := tx.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
