package icebergcheck

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// sortedRows prints rows sorted, one per line, for comparisons.
func sortedRows(rows []Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = fmt.Sprint(map[string]any(r))
	}
	slices.Sort(out)
	return out
}

// readBoth reads tbl independently and through iceberg-go's scan and
// checks that both see the same rows.
func readBoth(t *testing.T, tbl *table.Table) *Result {
	t.Helper()
	ctx := context.Background()
	own, err := ReadTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	scan, err := ScanTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := sortedRows(own.Rows), sortedRows(scan.Rows); !slices.Equal(a, b) {
		t.Fatalf("independent read and iceberg-go's scan differ:\nown:\n%v\nscan:\n%v", a, b)
	}
	if own.SnapshotID != scan.SnapshotID || own.SnapshotID == 0 {
		t.Fatalf("snapshots %d, %d", own.SnapshotID, scan.SnapshotID)
	}
	return own
}

func fieldIDs(t *testing.T, tbl *table.Table, names ...string) []int {
	var out []int
	for _, n := range names {
		f, ok := tbl.Schema().FindFieldByName(n)
		if !ok {
			t.Fatalf("no field %s", n)
		}
		out = append(out, f.ID)
	}
	return out
}

// TestReadUpserts commits upserts as the mirror writer does (rows and an
// equality delete of every touched key in one snapshot), a delete-only
// commit, then evolves the schema (new column, int promoted to long), and
// checks the live rows: an update survives the equality delete of its own
// commit, older versions do not, and old files read under the new schema.
func TestReadUpserts(t *testing.T) {
	cat := newCatalog(t)
	sc := iceberg.NewSchema(0,
		iceberg.NestedField{ID: 1, Name: "row_id", Type: iceberg.PrimitiveTypes.String, Required: true},
		iceberg.NestedField{ID: 2, Name: "name", Type: iceberg.PrimitiveTypes.String},
		iceberg.NestedField{ID: 3, Name: "n", Type: iceberg.PrimitiveTypes.Int32},
		iceberg.NestedField{ID: 4, Name: "score", Type: iceberg.PrimitiveTypes.Float64},
		iceberg.NestedField{ID: 5, Name: "active", Type: iceberg.PrimitiveTypes.Bool},
		iceberg.NestedField{ID: 6, Name: "ts", Type: iceberg.PrimitiveTypes.TimestampTz},
		iceberg.NestedField{ID: 7, Name: "addr", Type: &iceberg.StructType{FieldList: []iceberg.NestedField{
			{ID: 8, Name: "city", Type: iceberg.PrimitiveTypes.String},
			{ID: 9, Name: "zip", Type: iceberg.PrimitiveTypes.String},
		}}},
		iceberg.NestedField{ID: 10, Name: "tags", Type: &iceberg.ListType{ElementID: 11, Element: iceberg.PrimitiveTypes.String}},
	)
	tbl := createTable(t, cat, "upserts", sc, nil)
	key := fieldIDs(t, tbl, "row_id")
	row := func(id, name string, n int) string {
		return fmt.Sprintf(`{"row_id":%q,"name":%q,"n":%d,"score":%d.5,"active":true,"ts":"2023-11-14T22:13:20.123Z","addr":{"city":"Zürich","zip":"8001"},"tags":["a","b"]}`, id, name, n, n)
	}
	keys := func(ids ...string) string {
		s := "["
		for i, id := range ids {
			if i > 0 {
				s += ","
			}
			s += fmt.Sprintf(`{"row_id":%q}`, id)
		}
		return s + "]"
	}
	tbl = rowDelta(t, tbl, "["+row("k1", "a", 1)+","+row("k2", "b", 2)+","+row("k3", "c", 3)+","+row("k4", "d", 4)+","+row("k5", "e", 5)+"]",
		keys("k1", "k2", "k3", "k4", "k5"), key, nil)
	if got := readBoth(t, tbl); len(got.Rows) != 5 || got.DeletedRows != 0 {
		t.Fatalf("after the first commit: %d rows, %d deleted; its own equality deletes must not apply", len(got.Rows), got.DeletedRows)
	}
	// Update k2, delete k3, insert k6 (upsert: a delete for every key).
	tbl = rowDelta(t, tbl, "["+row("k2", "b2", 22)+","+row("k6", "f", 6)+"]", keys("k2", "k3", "k6"), key, nil)
	// A delete-only commit.
	tbl = rowDelta(t, tbl, "", keys("k1"), key, nil)
	// Schema evolution: a new column, int promoted to long.
	tx := tbl.NewTransaction()
	us := tx.UpdateSchema(true, false).AddColumn([]string{"extra"}, iceberg.PrimitiveTypes.Int64, "", false, nil).
		UpdateColumn([]string{"n"}, table.ColumnUpdate{FieldType: iceberg.Optional[iceberg.Type]{Val: iceberg.PrimitiveTypes.Int64, Valid: true}})
	if err := us.Commit(); err != nil {
		t.Fatal(err)
	}
	tbl, err := tx.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tbl = rowDelta(t, tbl, `[{"row_id":"k7","n":5000000000,"extra":7}]`, keys("k7"), key, nil)

	got := readBoth(t, tbl)
	ids := map[string]Row{}
	for _, r := range got.Rows {
		ids[r["row_id"].(string)] = r
	}
	if len(ids) != 5 || ids["k1"] != nil || ids["k3"] != nil || ids["k2"]["name"] != "b2" || ids["k2"]["n"] != int64(22) ||
		ids["k4"]["n"] != int64(4) || ids["k4"]["extra"] != nil || ids["k7"]["n"] != int64(5000000000) || ids["k7"]["extra"] != int64(7) {
		t.Fatalf("live rows:\n%v", sortedRows(got.Rows))
	}
	r := ids["k5"]
	if r["score"] != 5.5 || r["active"] != true || fmt.Sprint(r["ts"]) != "2023-11-14 22:13:20.123 +0000 UTC" ||
		fmt.Sprint(r["addr"]) != "map[city:Zürich zip:8001]" || fmt.Sprint(r["tags"]) != "[a b]" {
		t.Fatalf("k5 = %v", r)
	}
	// k1, k2 and k3 of the first file, k1 by the delete-only commit.
	if got.DataFiles != 3 || got.EqualityDeleteFiles != 4 || got.DeletedRows != 3 {
		t.Fatalf("%d data files, %d equality delete files, %d rows deleted", got.DataFiles, got.EqualityDeleteFiles, got.DeletedRows)
	}
	// The same through the metadata location alone.
	byLoc, err := ReadMetadataLocation(context.Background(), tbl.Properties(), tbl.MetadataLocation())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sortedRows(byLoc.Rows), sortedRows(got.Rows)) {
		t.Fatal("ReadMetadataLocation differs from ReadTable")
	}
}

// TestReadPartitioned checks that an equality delete applies only in its
// own partition.
func TestReadPartitioned(t *testing.T) {
	cat := newCatalog(t)
	sc := iceberg.NewSchema(0,
		iceberg.NestedField{ID: 1, Name: "row_id", Type: iceberg.PrimitiveTypes.String, Required: true},
		iceberg.NestedField{ID: 2, Name: "region", Type: iceberg.PrimitiveTypes.String, Required: true},
		iceberg.NestedField{ID: 3, Name: "v", Type: iceberg.PrimitiveTypes.Int64},
	)
	spec := iceberg.NewPartitionSpec(iceberg.PartitionField{SourceIDs: []int{2}, FieldID: 1000, Name: "region", Transform: iceberg.IdentityTransform{}})
	tbl := createTable(t, cat, "parts", sc, &spec)
	key, part := fieldIDs(t, tbl, "row_id"), fieldIDs(t, tbl, "region")
	tbl = rowDelta(t, tbl, `[{"row_id":"k1","region":"eu","v":1},{"row_id":"k1","region":"us","v":2},{"row_id":"k2","region":"eu","v":3}]`, "", key, part)
	tbl = rowDelta(t, tbl, `[{"row_id":"k2","region":"eu","v":4}]`, `[{"row_id":"k1","region":"eu"},{"row_id":"k2","region":"eu"}]`, key, part)
	got := readBoth(t, tbl)
	want := []string{"map[region:eu row_id:k2 v:4]", "map[region:us row_id:k1 v:2]"}
	if rows := sortedRows(got.Rows); !slices.Equal(rows, want) {
		t.Fatalf("rows %v, want %v", rows, want)
	}
}

func TestEqDeleteApplies(t *testing.T) {
	data := fileRef{seq: 5, partition: "0/a"}
	for _, tc := range []struct {
		del  fileRef
		want bool
	}{
		{fileRef{seq: 6, partition: "0/a"}, true},
		{fileRef{seq: 5, partition: "0/a"}, false}, // same commit: the update survives
		{fileRef{seq: 4, partition: "0/a"}, false},
		{fileRef{seq: 6, partition: "0/b"}, false}, // another partition
		{fileRef{seq: 6, partition: "1/a"}, false}, // another spec
		{fileRef{seq: 6, partition: "2/", unpartition: true}, true},
		{fileRef{seq: 5, partition: "2/", unpartition: true}, false},
	} {
		if got := eqDeleteApplies(tc.del, data); got != tc.want {
			t.Errorf("delete %+v on data %+v: %v, want %v", tc.del, data, got, tc.want)
		}
	}
}
