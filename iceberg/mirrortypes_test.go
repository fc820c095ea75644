package iceberg

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/icebergcheck"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

// commitRows commits one single-row flush per after (keys k1, k2, ...) and
// returns the model of the result.
func commitRows(t *testing.T, s *Sink, tableName string, afters ...string) *mirrormodel.Model {
	t.Helper()
	m := mirrormodel.New()
	for i, after := range afters {
		f := oneRowFlush(uint64(i+1), tableName, "k"+string(rune('1'+i)), after)
		mustCommit(t, s, f)
		r := f.Tables[0].Rows[0]
		m.CommitBatch(r.SourceID, []codec.Entry{r.Entry})
	}
	return m
}

// checkWithReaders compares the mirror table with the model through both
// of icebergcheck's readers (its own Parquet reader and iceberg-go's scan).
func checkWithReaders(t *testing.T, s *Sink, name string, m *mirrormodel.Model) {
	t.Helper()
	ctx := context.Background()
	tbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	own, err := icebergcheck.ReadTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	icebergcheck.CompareMirrorKey(t, name+" (own reader)", own.KeyColumn(), own.Rows, m.Rows(name))
	scan, err := icebergcheck.ScanTable(ctx, tbl)
	if err != nil {
		t.Fatal(err)
	}
	icebergcheck.CompareMirrorKey(t, name+" (scan)", scan.KeyColumn(), scan.Rows, m.Rows(name))
	if own.KeyColumn() != scan.KeyColumn() {
		t.Errorf("key column: %s and %s", own.KeyColumn(), scan.KeyColumn())
	}
}

func columnType(t *testing.T, s *Sink, tableName, col string) string {
	t.Helper()
	tbl, err := s.LoadMirrorTable(context.Background(), tableName)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := tbl.Schema().FindFieldByName(col)
	if !ok {
		return ""
	}
	return f.Type.String()
}

// TestMirrorInferTimestamps: with MirrorInferTimestamps, a column whose
// first value is an RFC 3339 string is timestamptz (nested too); a later
// string that is not one (or that has more than microsecond precision)
// sends its row to _extra, counted. Off, the same rows make string columns.
func TestMirrorInferTimestamps(t *testing.T) {
	afters := []string{
		`{"at":"2024-05-01T12:00:00.123Z","s":"plain","d":"2024-05-01","n":{"t":"2024-05-01T12:00:00+02:00"}}`,
		`{"at":"2024-05-01T14:30:00.000001+02:00","n":{"t":"1999-12-31T23:59:59Z"}}`,
		`{"at":"tomorrow"}`,
		`{"at":"2024-05-01T12:00:00.1234567Z"}`,
		`{"n":{"t":"soon"}}`,
		`{"at":1714564800}`,
	}
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorInferTimestamps = true })
	m := commitRows(t, s, "t", afters...)
	for col, want := range map[string]string{"at": "timestamptz", "s": "string", "d": "string", "n.t": "timestamptz"} {
		if got := columnType(t, s, "t", col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	checkWithReaders(t, s, "t", m)
	if n := s.MirrorTotals().ExtraRows; n != 4 {
		t.Errorf("extra rows %d, want 4", n)
	}

	off := openTestSink(t, t.TempDir(), mirrorOn)
	m = commitRows(t, off, "t", afters...)
	for _, col := range []string{"at", "n.t"} {
		if got := columnType(t, off, "t", col); got != "string" {
			t.Errorf("inference off: column %s is %s", col, got)
		}
	}
	checkWithReaders(t, off, "t", m)
	if n := off.MirrorTotals().ExtraRows; n != 1 {
		t.Errorf("inference off: extra rows %d, want 1 (the number)", n)
	}
}

func TestParseTimestamp(t *testing.T) {
	for s, want := range map[string]bool{
		"2024-05-01T12:00:00Z": true, "2024-05-01T12:00:00.123456-07:00": true, "2024-05-01T12:00:00.1234567Z": false,
		"2024-05-01 12:00:00Z": false, "2024-05-01T12:00:00": false, "2024-05-01": false, "2024-13-01T12:00:00Z": false, "": false,
	} {
		if _, got := parseTimestamp(s); got != want {
			t.Errorf("parseTimestamp(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestMirrorPinnedSchema: a pinned schema names the key column (holding
// the row id; a JSON member of that name must match it) and fixes column
// types: created with the table, never widened or re-inferred, values that
// do not fit go to _extra; other columns are inferred; a column pinned
// later is added to the existing table.
func TestMirrorPinnedSchema(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pin := MirrorTableSchema{Key: "id", Columns: map[string]string{
		"age": "int", "score": "double", "at": "timestamptz", "note": "string", "flag": "boolean"}}
	s := openTestSink(t, dir, func(c *Config) { c.Mirror = true; c.MirrorSchemas = map[string]MirrorTableSchema{"users": pin} })
	m := mirrormodel.New()
	for i, after := range []string{
		`{"id":1,"age":30,"score":1,"at":"2024-05-01T12:00:00Z","note":{"x":[1,2]},"flag":true,"other":"x"}`,
		`{"id":2,"age":5000000000}`,         // does not fit int: not widened
		`{"id":99,"age":1}`,                 // not the row id
		`{"id":"4","age":"old"}`,            // a string in an int column
		`{"at":"later","note":"text"}`,      // not a timestamp
		`{"score":"high","other":"y"}`,      // a string in a double column
		`{"id":"7","note":[1],"flag":null}`, // fits
		`{"score":9007199254740993}`,        // a long a double cannot hold exactly
	} {
		f := oneRowFlush(uint64(i+1), "users", fmt.Sprint(i+1), after)
		mustCommit(t, s, f)
		m.CommitBatch("src", []codec.Entry{f.Tables[0].Rows[0].Entry})
	}
	tbl, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if key, _ := tbl.Schema().FindFieldByID(mirrorFieldRowID); key.Name != "id" || !key.Required || tbl.Schema().IdentifierFieldIDs[0] != mirrorFieldRowID {
		t.Errorf("key field %+v, identifiers %v", key, tbl.Schema().IdentifierFieldIDs)
	}
	if _, ok := tbl.Schema().FindFieldByName(mirrorColRowID); ok {
		t.Error("a row_id column beside the pinned key")
	}
	for col, want := range map[string]string{"age": "int", "score": "double", "at": "timestamptz", "note": "string", "flag": "boolean", "other": "string"} {
		if got := columnType(t, s, "users", col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	checkWithReaders(t, s, "users", m)
	if n := s.MirrorTotals().ExtraRows; n != 6 {
		t.Errorf("extra rows %d, want 6", n)
	}

	// A column pinned later is added to the table by the next commit.
	s.Close()
	pin.Columns["city"] = "string"
	s = openTestSink(t, dir, func(c *Config) { c.Mirror = true; c.MirrorSchemas = map[string]MirrorTableSchema{"users": pin} })
	f := oneRowFlush(9, "users", "9", `{"id":9}`)
	mustCommit(t, s, f)
	m.CommitBatch("src", []codec.Entry{f.Tables[0].Rows[0].Entry})
	if got := columnType(t, s, "users", "city"); got != "string" {
		t.Errorf("column pinned later: %q", got)
	}
	checkWithReaders(t, s, "users", m)
}

// TestParseMirrorSchemas: the YAML file parses; errors name the field.
func TestParseMirrorSchemas(t *testing.T) {
	got, err := ParseMirrorSchemas([]byte("tables:\n  users:\n    key: user_id\n    columns:\n      age: long\n      at: timestamptz\n  orders:\n    columns: {total: double}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got["users"].Key != "user_id" || got["users"].Columns["at"] != "timestamptz" || got["orders"].Columns["total"] != "double" {
		t.Errorf("parsed %+v", got)
	}
	if got, err := ParseMirrorSchemas(nil); err != nil || len(got) != 0 {
		t.Errorf("empty file: %v, %v", got, err)
	}
	for in, want := range map[string]string{
		"tables:\n  users:\n    columns: {age: integer}\n":          `tables.users.columns.age: unknown type "integer" (want one of boolean, double, float, int, long, string, timestamptz)`,
		"tables:\n  users:\n    columns: {a.b: long}\n":             "tables.users.columns.a.b: cannot name a column",
		"tables:\n  users:\n    columns: {_op: long}\n":             "tables.users.columns._op: cannot name a column",
		"tables:\n  users:\n    key: id\n    columns: {id: long}\n": "tables.users.columns.id: is the key column",
		"tables:\n  users:\n    key: _extra\n":                      "tables.users.key: \"_extra\" cannot name a column",
		"tables:\n  users:\n    colums: {a: long}\n":                "field colums not found",
		"tables: [1]\n": "cannot unmarshal",
	} {
		_, err := ParseMirrorSchemas([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to contain %q", in, err, want)
		}
	}
	// Open validates the configuration too.
	_, err = Open(context.Background(), Config{DataDir: t.TempDir(), Logger: quietLogger(),
		MirrorSchemas: map[string]MirrorTableSchema{"t": {Columns: map[string]string{"x": "varchar"}}}})
	if err == nil || !strings.Contains(err.Error(), "tables.t.columns.x") {
		t.Errorf("Open with a bad pinned schema: %v", err)
	}
}

// TestMirrorListOfStructEvolution: new fields inside the struct elements
// of a list (any element, nested structs too) are added as optional fields
// of the element struct, with stable ids; widening works there too; old
// snapshots still read.
func TestMirrorListOfStructEvolution(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	m := commitRows(t, s, "t",
		`{"items":[{"a":1,"s":{"x":1}}]}`,
		`{"items":[{"a":2,"b":"new","s":{"x":2,"y":"z"}},{"a":3,"c":true,"d":[{"q":1}]}]}`,
		`{"items":[{"a":4,"d":[{"q":2,"r":"deep"}]}],"fresh":[{"u":1},{"v":"w"}]}`,
		`{"items":[{"a":"not a number"}]}`,
	)
	tbl, err := s.LoadMirrorTable(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"items.element.a": "long", "items.element.b": "string", "items.element.c": "boolean",
		"items.element.s.y": "string", "items.element.d.element.r": "string", "fresh.element.u": "long", "fresh.element.v": "string"} {
		if f, ok := tbl.Schema().FindFieldByName(path); !ok || f.Type.String() != want {
			t.Errorf("field %s: %v %v, want %s", path, f.Type, ok, want)
		}
	}
	checkWithReaders(t, s, "t", m)
	if n := s.MirrorTotals().ExtraRows; n != 1 {
		t.Errorf("extra rows %d, want 1 (the string in a long field)", n)
	}
	first := tbl.Metadata().Snapshots()[0].SnapshotID
	if old := readMirror(t, tbl, table.WithSnapshotID(first)); len(old) != 1 {
		t.Errorf("first snapshot reads %d rows", len(old))
	}
}
