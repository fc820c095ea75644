package iceberg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	yaml "go.yaml.in/yaml/v3"
)

// A pinned schema (Config.MirrorSchemas) fixes, for one CDC table, the name
// of its mirror's key column and the types of some columns. Pinned columns
// are created with the table (or added to an existing one), never inferred
// or widened: a value that does not fit sends its row to _extra. Columns
// not pinned are inferred as usual.

// MirrorTableSchema is the pinned schema of one mirror table.
type MirrorTableSchema struct {
	// Key names the key column, which holds the entry's row id (string,
	// required, the equality-delete key). Default "row_id". A member of
	// the row's JSON with that name must hold the row id (as a string, or
	// a number or boolean whose JSON text is the row id); otherwise the
	// row goes to _extra.
	Key string `yaml:"key"`
	// Columns maps column names to types: string, long, int, double,
	// float, boolean, timestamptz. A string column also takes JSON objects
	// and arrays, as their JSON text.
	Columns map[string]string `yaml:"columns"`
}

// pinnedTypes are the types a pinned column may have.
var pinnedTypes = map[string]iceberg.Type{
	"string":      iceberg.PrimitiveTypes.String,
	"long":        iceberg.PrimitiveTypes.Int64,
	"int":         iceberg.PrimitiveTypes.Int32,
	"double":      iceberg.PrimitiveTypes.Float64,
	"float":       iceberg.PrimitiveTypes.Float32,
	"boolean":     iceberg.PrimitiveTypes.Bool,
	"timestamptz": iceberg.PrimitiveTypes.TimestampTz,
}

// mirrorSchemasFile is the YAML layout of a pinned schemas file.
type mirrorSchemasFile struct {
	Tables map[string]MirrorTableSchema `yaml:"tables"`
}

// ParseMirrorSchemas parses and validates a pinned schemas file:
//
//	tables:
//	  users:
//	    key: user_id
//	    columns:
//	      age: long
//	      created_at: timestamptz
func ParseMirrorSchemas(data []byte) (map[string]MirrorTableSchema, error) {
	var f mirrorSchemasFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("mirror schemas: %w", err)
	}
	if err := validateMirrorSchemas(f.Tables); err != nil {
		return nil, err
	}
	return f.Tables, nil
}

// validateMirrorSchemas checks pinned schemas; errors name the field as in
// the file (tables.<table>.columns.<column>).
func validateMirrorSchemas(m map[string]MirrorTableSchema) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(m)) {
		ts := m[name]
		at := "tables." + name
		if name == "" {
			errs = append(errs, errors.New("mirror schemas: tables: a table name is empty"))
			continue
		}
		if ts.Key != "" && ts.Key != mirrorColRowID && !validColumnName(ts.Key) {
			errs = append(errs, fmt.Errorf("mirror schemas: %s.key: %q cannot name a column (empty, a dot, a control character or a system column name)", at, ts.Key))
		}
		for _, col := range slices.Sorted(maps.Keys(ts.Columns)) {
			typ := ts.Columns[col]
			switch {
			case !validColumnName(col):
				errs = append(errs, fmt.Errorf("mirror schemas: %s.columns.%s: cannot name a column (empty, a dot, a control character or a system column name)", at, col))
			case col == ts.Key:
				errs = append(errs, fmt.Errorf("mirror schemas: %s.columns.%s: is the key column (a string holding the row id); leave it out", at, col))
			case pinnedTypes[typ] == nil:
				errs = append(errs, fmt.Errorf("mirror schemas: %s.columns.%s: unknown type %q (want one of %s)", at, col, typ,
					strings.Join(slices.Sorted(maps.Keys(pinnedTypes)), ", ")))
			}
		}
	}
	return errors.Join(errs...)
}

// mirrorPin returns the pinned schema of a CDC table (the zero value when
// none is pinned), its key filled in.
func (s *Sink) mirrorPin(original string) MirrorTableSchema {
	p := s.cfg.MirrorSchemas[original]
	if p.Key == "" {
		p.Key = mirrorColRowID
	}
	return p
}

// schemaFor returns the schema a new mirror table of the pin is created
// with: the system columns (the key named by the pin), then the pinned
// columns in name order.
func (p MirrorTableSchema) schemaFor() *iceberg.Schema {
	base := MirrorSchema()
	fields := base.Fields()
	if p.Key != "" {
		fields[0].Name = p.Key
	}
	id := mirrorFieldExtra
	for _, col := range slices.Sorted(maps.Keys(p.Columns)) {
		id++
		fields = append(fields, iceberg.NestedField{ID: id, Name: col, Type: pinnedTypes[p.Columns[col]], Doc: "pinned"})
	}
	return iceberg.NewSchemaWithIdentifiers(0, []int{mirrorFieldRowID}, fields...)
}

// pinnedAdds returns the pinned columns tbl lacks, and warns about those it
// has with another type (the table's type stays: field types only widen).
func (s *Sink) pinnedAdds(tbl *table.Table, p MirrorTableSchema, warn bool) []planChange {
	var adds []planChange
	for _, col := range slices.Sorted(maps.Keys(p.Columns)) {
		want := pinnedTypes[p.Columns[col]]
		f, ok := tbl.Schema().FindFieldByName(col)
		switch {
		case !ok:
			adds = append(adds, planChange{path: []string{col}, typ: want})
		case warn && !f.Type.Equals(want):
			s.log.Warn("mirror column has another type than pinned; the table's type stays", "table", tbl.Identifier(),
				"column", col, "type", f.Type.String(), "pinned", want.String())
		}
	}
	if warn {
		if key := mirrorKeyColumn(tbl); key != p.Key {
			s.log.Warn("mirror key column differs from the pinned key; the table's stays", "table", tbl.Identifier(),
				"key", key, "pinned", p.Key)
		}
	}
	return adds
}
