package icebergcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// refMirror is a minimal mirror writer with a fixed schema, following the
// contract: each batch is folded to the winner per key, winners older than
// the live row are dropped, and every other winner gets an equality delete
// (inserts too) plus, unless it is a delete, a row: typed columns when the
// after fits the schema, the whole after in _extra when it does not. It
// lets the checker be tested on realistic mirror tables before the real
// writer exists.
type refMirror struct {
	cat    catalog.Catalog
	tables map[string]*table.Table
	live   map[string]map[string]mirrormodel.Version
	extras int // rows written to _extra
}

func refMirrorSchema() *iceberg.Schema {
	str, long, dbl := iceberg.PrimitiveTypes.String, iceberg.PrimitiveTypes.Int64, iceberg.PrimitiveTypes.Float64
	return iceberg.NewSchema(0,
		iceberg.NestedField{ID: 1, Name: ColRowID, Type: str, Required: true},
		iceberg.NestedField{ID: 2, Name: ColSourceID, Type: str},
		iceberg.NestedField{ID: 3, Name: ColEntrySeq, Type: long},
		iceberg.NestedField{ID: 4, Name: ColEventTime, Type: iceberg.PrimitiveTypes.TimestampTz},
		iceberg.NestedField{ID: 5, Name: ColOp, Type: str},
		iceberg.NestedField{ID: 6, Name: ColExtra, Type: str},
		iceberg.NestedField{ID: 7, Name: "id", Type: long},
		iceberg.NestedField{ID: 8, Name: "name", Type: str},
		iceberg.NestedField{ID: 9, Name: "email", Type: str},
		iceberg.NestedField{ID: 10, Name: "age", Type: long},
		iceberg.NestedField{ID: 11, Name: "score", Type: dbl},
		iceberg.NestedField{ID: 12, Name: "active", Type: iceberg.PrimitiveTypes.Bool},
		iceberg.NestedField{ID: 13, Name: "updated_at", Type: str},
		iceberg.NestedField{ID: 14, Name: "edits", Type: long},
		iceberg.NestedField{ID: 15, Name: "address", Type: &iceberg.StructType{FieldList: []iceberg.NestedField{
			{ID: 16, Name: "city", Type: str},
			{ID: 17, Name: "zip", Type: str},
			{ID: 18, Name: "geo", Type: &iceberg.StructType{FieldList: []iceberg.NestedField{
				{ID: 19, Name: "lat", Type: dbl},
				{ID: 20, Name: "lon", Type: dbl},
			}}},
		}}},
		iceberg.NestedField{ID: 21, Name: "tags", Type: &iceberg.ListType{ElementID: 22, Element: str}},
	)
}

// fits reports whether a decoded after fits refMirrorSchema's columns.
func fits(obj map[string]any) bool {
	kind := func(v any, k string) bool {
		switch k {
		case "long":
			n, ok := v.(json.Number)
			return ok && isInt(n)
		case "double":
			n, ok := v.(json.Number)
			return ok && !isInt(n)
		case "string":
			_, ok := v.(string)
			return ok
		case "bool":
			_, ok := v.(bool)
			return ok
		}
		return false
	}
	top := map[string]string{"id": "long", "name": "string", "email": "string", "age": "long", "score": "double",
		"active": "bool", "updated_at": "string", "edits": "long"}
	for k, v := range obj {
		switch k {
		case "address":
			a, ok := v.(map[string]any)
			if !ok || len(a) != 3 || !kind(a["city"], "string") || !kind(a["zip"], "string") {
				return false
			}
			g, ok := a["geo"].(map[string]any)
			if !ok || len(g) != 2 || !kind(g["lat"], "double") || !kind(g["lon"], "double") {
				return false
			}
		case "tags":
			l, ok := v.([]any)
			if !ok {
				return false
			}
			for _, e := range l {
				if !kind(e, "string") {
					return false
				}
			}
		default:
			if k, ok := top[k]; !ok || !kind(v, k) {
				return false
			}
		}
	}
	return true
}

func (m *refMirror) commit(t *testing.T, source string, entries []codec.Entry) {
	t.Helper()
	winners := map[string]map[string]mirrormodel.Change{}
	for i := range entries {
		c := mirrormodel.ChangeOf(source, &entries[i])
		if winners[c.Table] == nil {
			winners[c.Table] = map[string]mirrormodel.Change{}
		}
		if w, ok := winners[c.Table][c.RowID]; !ok || c.Version.Compare(w.Version) > 0 {
			winners[c.Table][c.RowID] = c
		}
	}
	for name, ws := range winners {
		tbl := m.tables[name]
		if tbl == nil {
			tbl = createTable(t, m.cat, name, refMirrorSchema(), nil)
			m.tables[name], m.live[name] = tbl, map[string]mirrormodel.Version{}
		}
		var data, keys []string
		for id, c := range ws {
			if v, ok := m.live[name][id]; ok && v.Compare(c.Version) > 0 {
				continue
			}
			keys = append(keys, fmt.Sprintf(`{"row_id":%q}`, id))
			if c.Op == codec.OpDelete {
				delete(m.live[name], id)
				continue
			}
			m.live[name][id] = c.Version
			after, err := decodeJSON(c.After)
			if err != nil {
				t.Fatal(err)
			}
			row := map[string]any{}
			if obj, ok := after.(map[string]any); ok && fits(obj) {
				row = obj
			} else {
				row[ColExtra] = string(c.After)
				m.extras++
			}
			row[ColRowID], row[ColSourceID], row[ColEntrySeq], row[ColOp] = id, c.SourceID, c.EntrySeq, c.Op.String()
			row[ColEventTime] = time.UnixMilli(c.EventTimeMs).UTC().Format("2006-01-02T15:04:05.000Z")
			b, err := json.Marshal(row)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, string(b))
		}
		if len(keys) == 0 {
			continue
		}
		dataJSON := ""
		if len(data) > 0 {
			dataJSON = "[" + strings.Join(data, ",") + "]"
		}
		m.tables[name] = rowDelta(t, tbl, dataJSON, "["+strings.Join(keys, ",")+"]", []int{1}, nil)
	}
}

// TestKeyedMirrorMatchesModel writes the keyed workload through refMirror
// and checks, every few commits, that both readers see exactly the model's
// state: the reader and CompareMirror on realistic mirror tables (updates
// surviving their own commit's deletes, stale changes, type changes in
// _extra, new fields).
func TestKeyedMirrorMatchesModel(t *testing.T) {
	gen, err := workload.NewKeyed(workload.KeyedConfig{Seed: 11, Keys: 600, BatchSize: 150})
	if err != nil {
		t.Fatal(err)
	}
	m := &refMirror{cat: newCatalog(t), tables: map[string]*table.Table{}, live: map[string]map[string]mirrormodel.Version{}}
	const batches = 24
	for b := 1; b <= batches; b++ {
		kb := gen.Next()
		m.commit(t, kb.SourceID, kb.Entries)
		if b%8 != 0 {
			continue
		}
		for _, name := range gen.Tables() {
			want := gen.Model().Rows(name)
			own := readBoth(t, m.tables[name])
			CompareMirror(t, name, own.Rows, want)
			scan, err := ScanTable(context.Background(), m.tables[name])
			if err != nil {
				t.Fatal(err)
			}
			CompareMirror(t, name+" (iceberg-go scan)", scan.Rows, want)
			if len(want) == 0 || own.EqualityDeleteFiles == 0 || own.DeletedRows == 0 {
				t.Fatalf("%s: %d model rows, %d delete files, %d rows deleted: the test exercises nothing", name, len(want), own.EqualityDeleteFiles, own.DeletedRows)
			}
		}
		if t.Failed() {
			t.Fatalf("after batch %d", b)
		}
	}
	if m.extras == 0 {
		t.Error("no row went to _extra: the workload made no type change or new field")
	}
	// A stale mirror (one commit behind) is caught.
	kb := gen.Next()
	ft := &fakeT{}
	for _, name := range gen.Tables() {
		own, err := ReadTable(context.Background(), m.tables[name])
		if err != nil {
			t.Fatal(err)
		}
		CompareMirror(ft, name, own.Rows, gen.Model().Rows(name))
	}
	if !strings.Contains(ft.msg, "differs from the model") {
		t.Errorf("a mirror missing batch %d of %s compares equal", kb.Sequence, kb.SourceID)
	}
}
