package iceberg

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Typed columns of a mirror table are inferred from the top-level keys of
// the rows' `after` JSON: strings -> string, integers -> long, other
// numbers -> double, booleans -> boolean, objects -> struct, arrays -> list
// (or JSON text in a string column with Config.MirrorNestedAsJSON). The
// first value seen decides a column's type. Later values either fit it
// (a long fits a double column; int and float columns are widened to long
// and double when a value needs it) or do not: then the typed value is
// null and the whole row is kept as JSON text in _extra. A value with no
// type to infer (null, [], {}) creates no column.

// mirrorTyping is how values are typed (Config.MirrorNestedAsJSON,
// Config.MirrorInferTimestamps).
type mirrorTyping struct {
	nestedAsJSON bool // objects and arrays as JSON text
	timestamps   bool // RFC 3339 strings as timestamptz
}

func (s *Sink) mirrorTyping() mirrorTyping {
	return mirrorTyping{nestedAsJSON: s.cfg.MirrorNestedAsJSON, timestamps: s.cfg.MirrorInferTimestamps}
}

// parseTimestamp parses an RFC 3339 timestamp: date, 'T', time, zone
// ("Z" or an offset), at most 6 fractional digits (Iceberg keeps
// microseconds: more would be lost, so such a string is no timestamp).
func parseTimestamp(s string) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") || s[10] != 'T' {
		return time.Time{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	if dot := strings.IndexByte(s, '.'); dot >= 0 {
		end := dot + 1
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end++
		}
		if end-dot-1 > 6 {
			return time.Time{}, false
		}
	}
	return ts, true
}

// validColumnName reports whether a JSON key can name a typed column:
// not empty, no dot (iceberg-go addresses nested fields by dotted paths),
// no control characters, and not a system column.
func validColumnName(k string) bool {
	if k == "" || strings.ContainsAny(k, ".") || mirrorSystemCols[k] {
		return false
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// inferType returns the column type for a first value, or nil when the
// value has no type to infer.
func inferType(v any, ty mirrorTyping) iceberg.Type {
	switch x := v.(type) {
	case string:
		if ty.timestamps {
			if _, ok := parseTimestamp(x); ok {
				return iceberg.PrimitiveTypes.TimestampTz
			}
		}
		return iceberg.PrimitiveTypes.String
	case bool:
		return iceberg.PrimitiveTypes.Bool
	case json.Number:
		if _, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return iceberg.PrimitiveTypes.Int64
		}
		if f, err := x.Float64(); err == nil && !math.IsInf(f, 0) {
			return iceberg.PrimitiveTypes.Float64
		}
		return nil
	case map[string]any:
		if ty.nestedAsJSON {
			return iceberg.PrimitiveTypes.String
		}
		var fields []iceberg.NestedField
		for _, k := range slices.Sorted(mapKeys(x)) {
			if !validColumnName(k) {
				continue
			}
			if t := inferType(x[k], ty); t != nil {
				fields = append(fields, iceberg.NestedField{Name: k, Type: t})
			}
		}
		if len(fields) == 0 {
			return nil
		}
		return &iceberg.StructType{FieldList: fields}
	case []any:
		if ty.nestedAsJSON {
			return iceberg.PrimitiveTypes.String
		}
		for _, e := range x {
			if t := inferType(e, ty); t != nil {
				return &iceberg.ListType{Element: t, ElementRequired: false}
			}
		}
		return nil
	}
	return nil
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// schemaPlan collects the schema changes a commit's rows need, against a
// working copy of the table's columns: new columns (top level, inside
// structs or inside the struct elements of lists) and widened primitives.
type schemaPlan struct {
	root    *planNode
	ty      mirrorTyping
	pinned  map[string]bool // pinned top-level columns: never widened
	keyBufs [][]string      // sortedKeys' buffers, by depth
	adds    []planChange
	widens  []planChange
}

type planChange struct {
	path []string
	typ  iceberg.Type
}

// planNode is a column of the working copy. A struct, or a list of
// structs, has its (element's) fields as children.
type planNode struct {
	typ    iceberg.Type // the column's type (as loaded or added)
	fields map[string]*planNode
	added  bool // added by this plan: children join its type directly
}

func newSchemaPlan(sc *iceberg.Schema, ty mirrorTyping) *schemaPlan {
	st := sc.AsStruct()
	return &schemaPlan{root: nodeOf(&st), ty: ty}
}

func nodeOf(t iceberg.Type) *planNode {
	n := &planNode{typ: t}
	if x := structOf(t); x != nil {
		n.fields = make(map[string]*planNode)
		for _, f := range x.FieldList {
			n.fields[f.Name] = nodeOf(f.Type)
		}
	}
	return n
}

// structOf returns t when it is a struct, its element when it is a list of
// structs (iceberg-go's UpdateSchema adds a field to a list's element
// struct by the list's path), nil otherwise.
func structOf(t iceberg.Type) *iceberg.StructType {
	switch x := t.(type) {
	case *iceberg.StructType:
		return x
	case *iceberg.ListType:
		if st, ok := x.Element.(*iceberg.StructType); ok {
			return st
		}
	}
	return nil
}

func markAdded(n *planNode) {
	n.added = true
	for _, c := range n.fields {
		markAdded(c)
	}
}

// pin plans the pinned columns the table lacks and keeps every pinned
// column from widening.
func (p *schemaPlan) pin(pin MirrorTableSchema, adds []planChange) {
	p.pinned = make(map[string]bool, len(pin.Columns))
	for col := range pin.Columns {
		p.pinned[col] = true
	}
	for _, a := range adds {
		p.root.fields[a.path[0]] = nodeOf(a.typ)
		p.adds = append(p.adds, a)
	}
}

// sortedKeys returns m's keys sorted (new columns are added in name
// order), in a buffer reused for every object at that depth.
func (p *schemaPlan) sortedKeys(m map[string]any, depth int) []string {
	for len(p.keyBufs) <= depth {
		p.keyBufs = append(p.keyBufs, nil)
	}
	b := p.keyBufs[depth][:0]
	for k := range m {
		b = append(b, k)
	}
	slices.Sort(b)
	p.keyBufs[depth] = b
	return b
}

// observeRow plans the changes a row's values need.
func (p *schemaPlan) observeRow(m map[string]any) {
	for _, k := range p.sortedKeys(m, 0) {
		if validColumnName(k) {
			p.observe(p.root, []string{k}, m[k])
		}
	}
}

func (p *schemaPlan) observe(parent *planNode, path []string, v any) {
	name := path[len(path)-1]
	n, ok := parent.fields[name]
	if !ok {
		t := inferType(v, p.ty)
		if t == nil {
			return
		}
		child := nodeOf(t)
		markAdded(child)
		parent.fields[name] = child
		if parent.added {
			// The parent struct is itself added by this plan: the new
			// field joins its type (shared with the planned add).
			st := structOf(parent.typ)
			st.FieldList = append(st.FieldList, iceberg.NestedField{Name: name, Type: t})
		} else {
			p.adds = append(p.adds, planChange{path: slices.Clone(path), typ: t})
		}
		// The type came from the first element of a list: the others may
		// bring more fields.
		p.observeElements(child, path, v)
		return
	}
	if len(path) == 1 && p.pinned[name] {
		return // pinned: a value that does not fit goes to _extra
	}
	switch n.typ.(type) {
	case iceberg.Int32Type:
		if num, ok := v.(json.Number); ok {
			if i, err := strconv.ParseInt(string(num), 10, 64); err == nil && (i < math.MinInt32 || i > math.MaxInt32) {
				n.typ = iceberg.PrimitiveTypes.Int64
				p.widens = append(p.widens, planChange{path: slices.Clone(path), typ: n.typ})
			}
		}
	case iceberg.Float32Type:
		if num, ok := v.(json.Number); ok {
			if f, err := num.Float64(); err == nil && float64(float32(f)) != f {
				n.typ = iceberg.PrimitiveTypes.Float64
				p.widens = append(p.widens, planChange{path: slices.Clone(path), typ: n.typ})
			}
		}
	case *iceberg.StructType:
		if obj, ok := v.(map[string]any); ok {
			for _, k := range p.sortedKeys(obj, len(path)) {
				if validColumnName(k) {
					p.observe(n, append(path, k), obj[k])
				}
			}
		}
	case *iceberg.ListType:
		p.observeElements(n, path, v)
	}
}

// observeElements plans the fields the struct elements of a list need: a
// list of structs gains the fields of any of its elements; other lists add
// nothing (a misfit goes to _extra).
func (p *schemaPlan) observeElements(n *planNode, path []string, v any) {
	arr, ok := v.([]any)
	if !ok || n.fields == nil {
		return
	}
	for _, e := range arr {
		if obj, ok := e.(map[string]any); ok {
			for _, k := range p.sortedKeys(obj, len(path)) {
				if validColumnName(k) {
					p.observe(n, append(path, k), obj[k])
				}
			}
		}
	}
}

// apply stages the planned changes on an UpdateSchema; it reports whether
// there were any.
func (p *schemaPlan) apply(u *table.UpdateSchema) bool {
	for _, c := range p.adds {
		u.AddColumn(c.path, c.typ, "", false, nil)
	}
	for _, c := range p.widens {
		u.UpdateColumn(c.path, table.ColumnUpdate{FieldType: iceberg.Optional[iceberg.Type]{Valid: true, Val: c.typ}})
	}
	return len(p.adds)+len(p.widens) > 0
}
