package icebergcheck

import (
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
)

// value converts row i of arr, a column of Iceberg type typ, to the Go
// value Row documents. The Arrow type may be narrower than typ (a file
// written before int was promoted to long).
func value(arr arrow.Array, i int, typ iceberg.Type) (any, error) {
	if arr.IsNull(i) {
		return nil, nil
	}
	switch t := typ.(type) {
	case iceberg.BooleanType:
		if a, ok := arr.(*array.Boolean); ok {
			return a.Value(i), nil
		}
	case iceberg.Int32Type, iceberg.Int64Type:
		switch a := arr.(type) {
		case *array.Int32:
			return int64(a.Value(i)), nil
		case *array.Int64:
			return a.Value(i), nil
		}
	case iceberg.Float32Type, iceberg.Float64Type:
		switch a := arr.(type) {
		case *array.Float32:
			return float64(a.Value(i)), nil
		case *array.Float64:
			return a.Value(i), nil
		}
	case iceberg.StringType:
		if a, ok := arr.(interface{ Value(int) string }); ok {
			return a.Value(i), nil
		}
	case iceberg.BinaryType, iceberg.FixedType:
		if a, ok := arr.(interface{ Value(int) []byte }); ok {
			return append([]byte(nil), a.Value(i)...), nil
		}
	case iceberg.TimestampType, iceberg.TimestampTzType, iceberg.TimestampNsType, iceberg.TimestampTzNsType:
		if a, ok := arr.(*array.Timestamp); ok {
			unit := a.DataType().(*arrow.TimestampType).Unit
			return a.Value(i).ToTime(unit).UTC(), nil
		}
	case iceberg.DateType:
		if a, ok := arr.(*array.Date32); ok {
			return a.Value(i).ToTime().UTC(), nil
		}
	case *iceberg.StructType:
		if a, ok := arr.(*array.Struct); ok {
			return structValue(a, i, t)
		}
	case *iceberg.ListType:
		if a, ok := arr.(array.ListLike); ok {
			start, end := a.ValueOffsets(i)
			out := make([]any, 0, end-start)
			for j := start; j < end; j++ {
				v, err := value(a.ListValues(), int(j), t.Element)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		}
	default:
		// Decimals, times, UUIDs, maps...: their text is enough for checks.
		return arr.ValueStr(i), nil
	}
	return nil, fmt.Errorf("icebergcheck: Arrow %s for Iceberg %s", arr.DataType(), typ)
}

// structValue converts a struct by field id (by name when the Arrow fields
// carry no ids), fields absent from the file being nil.
func structValue(a *array.Struct, i int, t *iceberg.StructType) (map[string]any, error) {
	st := a.DataType().(*arrow.StructType)
	byID, byName := map[int]int{}, map[string]int{}
	for k, f := range st.Fields() {
		byID[fieldID(f)] = k
		byName[f.Name] = k
	}
	out := make(map[string]any, len(t.FieldList))
	for _, f := range t.FieldList {
		k, ok := byID[f.ID]
		if !ok {
			k, ok = byName[f.Name]
		}
		if !ok {
			out[f.Name] = nil
			continue
		}
		v, err := value(a.Field(k), i, f.Type)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.Name, err)
		}
		out[f.Name] = v
	}
	return out, nil
}

// timeOf is a helper for comparisons: t in UTC with ms precision dropped
// to what Iceberg stores (microseconds).
func timeOf(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
