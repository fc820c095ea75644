package iceberg

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// mirrorBuildCheckRows is how many rows buildMirrorRecord decodes between
// two looks at its context (a few milliseconds' work).
const mirrorBuildCheckRows = 1024

// buildMirrorRecord builds the Arrow record of the rows to write (the
// winners that are not deletes), typed by the table's current schema. It
// returns the number of rows whose `after` went to _extra, and the decoded
// `after` objects of those rows (in order: the schema plan's input).
func buildMirrorRecord(ctx context.Context, sc *iceberg.Schema, rows []*mirrorChange, ty mirrorTyping, pin MirrorTableSchema) (arrow.RecordBatch, int64, []map[string]any, error) {
	asc, err := table.SchemaToArrowSchema(sc, nil, true, false)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("mirror arrow schema: %w", err)
	}
	fields := sc.Fields()
	b := array.NewRecordBuilder(memory.DefaultAllocator, asc)
	defer b.Release()
	idx := make(map[int]int, len(fields)) // field id -> column
	have := make(map[string]bool, len(fields))
	colTy := make([]mirrorTyping, len(fields))
	for i, f := range fields {
		idx[f.ID] = i
		if f.ID > mirrorFieldExtra {
			have[f.Name] = true
		}
		colTy[i] = ty
		if pin.Columns[f.Name] == "string" {
			colTy[i].nestedAsJSON = true // a pinned string column takes JSON text
		}
	}
	// A custom key column (a pinned key) may appear in the JSON: it must
	// hold the row id.
	keyName := fields[idx[mirrorFieldRowID]].Name
	if keyName == mirrorColRowID {
		keyName = ""
	}
	var (
		extraRows int64
		misfits   []map[string]any
	)
	dec := newAfterDecoder()
	for n, r := range rows {
		// Decoding a large commit's rows takes seconds (tens under -race):
		// a commit timeout or a shutdown's deadline must cut it short.
		if n%mirrorBuildCheckRows == 0 && ctx.Err() != nil {
			return nil, 0, nil, fmt.Errorf("mirror rows: %w", context.Cause(ctx))
		}
		b.Field(idx[mirrorFieldRowID]).(*array.StringBuilder).Append(r.key)
		b.Field(idx[mirrorFieldSourceID]).(*array.StringBuilder).Append(r.source)
		b.Field(idx[mirrorFieldEntrySeq]).(*array.Int64Builder).Append(int64(r.entry))
		b.Field(idx[mirrorFieldEventTime]).(*array.TimestampBuilder).Append(arrow.Timestamp(int64(r.eventMs) * 1000))
		b.Field(idx[mirrorFieldOp]).(*array.StringBuilder).Append(string(opBytes(r.op)))
		m, fit := dec.parse(r.after)
		isObject := fit
		for i, f := range fields {
			if f.ID <= mirrorFieldExtra {
				continue
			}
			if !appendJSON(b.Field(i), f.Type, m[f.Name], colTy[i]) {
				fit = false
			}
		}
		for k, v := range m {
			if v == nil || have[k] {
				continue
			}
			if k != keyName || !isRowID(v, r.key) {
				fit = false // a value with no column (no type to infer, a reserved name) or a wrong key
			}
		}
		eb := b.Field(idx[mirrorFieldExtra]).(*array.StringBuilder)
		if fit {
			eb.AppendNull()
		} else {
			eb.Append(r.after)
			extraRows++
			if isObject {
				misfits = append(misfits, m)
			}
		}
	}
	return b.NewRecordBatch(), extraRows, misfits, nil
}

// isRowID reports whether a JSON value is the row id: a string equal to it,
// or a number or boolean whose JSON text is.
func isRowID(v any, key string) bool {
	switch x := v.(type) {
	case string:
		return x == key
	case json.Number:
		return string(x) == key
	case bool:
		return strconv.FormatBool(x) == key
	}
	return false
}

// appendJSON appends a decoded JSON value to a builder of type t. A value
// that does not fit is appended as null and reported with false.
func appendJSON(b array.Builder, t iceberg.Type, v any, ty mirrorTyping) bool {
	if v == nil {
		b.AppendNull()
		return true
	}
	miss := func() bool { b.AppendNull(); return false }
	switch t := t.(type) {
	case iceberg.StringType:
		switch x := v.(type) {
		case string:
			b.(*array.StringBuilder).Append(x)
			return true
		case map[string]any, []any:
			if !ty.nestedAsJSON {
				return miss()
			}
			js, err := json.Marshal(x)
			if err != nil {
				return miss()
			}
			b.(*array.StringBuilder).Append(string(js))
			return true
		}
	case iceberg.Int64Type:
		if n, ok := v.(json.Number); ok {
			if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				b.(*array.Int64Builder).Append(i)
				return true
			}
		}
	case iceberg.Int32Type:
		if n, ok := v.(json.Number); ok {
			if i, err := strconv.ParseInt(string(n), 10, 32); err == nil {
				b.(*array.Int32Builder).Append(int32(i))
				return true
			}
		}
	case iceberg.Float64Type:
		if n, ok := v.(json.Number); ok {
			f, err := n.Float64()
			if !strings.ContainsAny(string(n), ".eE") {
				// An integer: a double column takes it only when exact.
				if i, ierr := strconv.ParseInt(string(n), 10, 64); ierr != nil || f >= math.MaxInt64 || int64(f) != i {
					return miss()
				}
			}
			if err == nil && !math.IsInf(f, 0) {
				b.(*array.Float64Builder).Append(f)
				return true
			}
		}
	case iceberg.Float32Type:
		if n, ok := v.(json.Number); ok {
			if f, err := n.Float64(); err == nil && float64(float32(f)) == f {
				b.(*array.Float32Builder).Append(float32(f))
				return true
			}
		}
	case iceberg.BooleanType:
		if x, ok := v.(bool); ok {
			b.(*array.BooleanBuilder).Append(x)
			return true
		}
	case iceberg.TimestampTzType:
		if x, ok := v.(string); ok {
			if ts, ok := parseTimestamp(x); ok {
				b.(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMicro()))
				return true
			}
		}
	case *iceberg.StructType:
		obj, ok := v.(map[string]any)
		if !ok {
			return miss()
		}
		sb := b.(*array.StructBuilder)
		sb.Append(true)
		fit := true
		for i, f := range t.FieldList {
			if !appendJSON(sb.FieldBuilder(i), f.Type, obj[f.Name], ty) {
				fit = false
			}
		}
		return fit && onlyKnownOrNull(obj, t.FieldList)
	case *iceberg.ListType:
		arr, ok := v.([]any)
		if !ok {
			return miss()
		}
		lb := b.(*array.ListBuilder)
		lb.Append(true)
		fit := true
		for _, e := range arr {
			if !appendJSON(lb.ValueBuilder(), t.Element, e, ty) {
				fit = false
			}
		}
		return fit
	}
	return miss()
}

// onlyKnownOrNull reports whether every member of obj has a field, or is
// null.
func onlyKnownOrNull(obj map[string]any, fields []iceberg.NestedField) bool {
	for k, v := range obj {
		if v == nil {
			continue
		}
		found := false
		for _, f := range fields {
			if f.Name == k {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
