package icebergcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

// Column names of a mirror table's system columns (the mirror contract).
const (
	ColRowID     = "row_id"
	ColSourceID  = "_source_id"
	ColEntrySeq  = "_entry_seq"
	ColEventTime = "_event_time"
	ColOp        = "_op"
	ColExtra     = "_extra"
)

var systemColumns = []string{ColRowID, ColSourceID, ColEntrySeq, ColEventTime, ColOp, ColExtra}

// maxReported bounds the differences CompareMirror reports one by one.
const maxReported = 25

// CompareMirror reports (t.Errorf) every difference between the live rows
// of a mirror table and the model's rows of that table: missing, extra and
// duplicate keys, and per key the system columns and the values and types
// of the after JSON (from the typed columns, or from _extra when set).
func CompareMirror(t testing.TB, name string, rows []Row, want map[string]mirrormodel.Row) {
	t.Helper()
	diffs := DiffMirror(rows, want)
	if len(diffs) == 0 {
		return
	}
	shown := diffs[:min(len(diffs), maxReported)]
	t.Errorf("mirror %s differs from the model (%d rows, model %d): %d differences:\n  %s%s", name, len(rows), len(want), len(diffs),
		strings.Join(shown, "\n  "), map[bool]string{true: "\n  ...", false: ""}[len(diffs) > len(shown)])
}

// CompareMirrorKey is CompareMirror for a table whose key column (holding
// the row id) is named key, as a pinned schema names it (Result.KeyColumn).
func CompareMirrorKey(t testing.TB, name, key string, rows []Row, want map[string]mirrormodel.Row) {
	t.Helper()
	diffs := DiffMirrorKey(rows, want, key)
	if len(diffs) == 0 {
		return
	}
	shown := diffs[:min(len(diffs), maxReported)]
	t.Errorf("mirror %s differs from the model (%d rows, model %d): %d differences:\n  %s%s", name, len(rows), len(want), len(diffs),
		strings.Join(shown, "\n  "), map[bool]string{true: "\n  ...", false: ""}[len(diffs) > len(shown)])
}

// DiffMirror lists the differences CompareMirror reports, sorted.
func DiffMirror(rows []Row, want map[string]mirrormodel.Row) []string {
	return DiffMirrorKey(rows, want, ColRowID)
}

// DiffMirrorKey is DiffMirror with the key column named key. A member of
// the after JSON named like a custom key must hold the row id (its JSON
// text), or the row must be in _extra.
func DiffMirrorKey(rows []Row, want map[string]mirrormodel.Row, key string) []string {
	var diffs []string
	seen := map[string]int{}
	for _, r := range rows {
		id, ok := r[key].(string)
		if !ok {
			diffs = append(diffs, fmt.Sprintf("row without a string %s: %v", key, map[string]any(r)))
			continue
		}
		seen[id]++
		if seen[id] == 2 {
			diffs = append(diffs, fmt.Sprintf("key %s: duplicate rows", id))
		}
		w, ok := want[id]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("key %s: extra row (the model has none): %s", id, describeRow(r)))
			continue
		}
		if seen[id] == 1 {
			for _, d := range diffRow(r, w, key, id) {
				diffs = append(diffs, fmt.Sprintf("key %s: %s", id, d))
			}
		}
	}
	for id, w := range want {
		if seen[id] == 0 {
			diffs = append(diffs, fmt.Sprintf("key %s: missing (model: %s by %s entry %d at %d: %s)", id, w.Op, w.SourceID, w.EntrySeq, w.EventTimeMs, w.After))
		}
	}
	slices.Sort(diffs)
	return diffs
}

func describeRow(r Row) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(r)) {
		if r[k] != nil {
			fmt.Fprintf(&b, "%s=%v ", k, r[k])
		}
	}
	return strings.TrimSpace(b.String())
}

// diffRow compares one mirror row (key column key, holding id) with the
// model's row of its key.
func diffRow(r Row, w mirrormodel.Row, key, id string) []string {
	var diffs []string
	check := func(col string, want any) {
		if got := r[col]; got != want {
			diffs = append(diffs, fmt.Sprintf("%s: want %s, got %s", col, describe(want), describe(got)))
		}
	}
	check(ColSourceID, w.SourceID)
	check(ColEntrySeq, int64(w.EntrySeq))
	check(ColOp, w.Op.String())
	if got, ok := r[ColEventTime].(time.Time); !ok || !got.Equal(time.UnixMilli(w.EventTimeMs)) {
		diffs = append(diffs, fmt.Sprintf("%s: want %s, got %s", ColEventTime, time.UnixMilli(w.EventTimeMs).UTC().Format(time.RFC3339Nano), describe(r[ColEventTime])))
	}
	after, err := decodeJSON(w.After)
	if err != nil {
		return append(diffs, fmt.Sprintf("model after is not JSON: %v", err))
	}
	obj, isObj := after.(map[string]any)
	extra, hasExtra := r[ColExtra].(string)
	if r[ColExtra] != nil && !hasExtra {
		diffs = append(diffs, fmt.Sprintf("%s: got %s, want a string", ColExtra, describe(r[ColExtra])))
	}
	if hasExtra {
		if d := diffJSONText(extra, after); d != "" {
			diffs = append(diffs, fmt.Sprintf("%s: %s", ColExtra, d))
		}
	} else if !isObj {
		diffs = append(diffs, fmt.Sprintf("after %s is not an object and _extra is null", w.After))
	}
	for _, col := range slices.Sorted(maps.Keys(r)) {
		if slices.Contains(systemColumns, col) || col == key {
			continue
		}
		got := r[col]
		jv, present := obj[col]
		if hasExtra && got == nil {
			continue // with _extra the typed columns may be left null
		}
		if !present {
			if got != nil {
				diffs = append(diffs, fmt.Sprintf("column %s: want null (not in after), got %s", col, describe(got)))
			}
			continue
		}
		if d := diffValue(jv, got, hasExtra); d != "" {
			diffs = append(diffs, fmt.Sprintf("column %s: %s", col, d))
		}
	}
	if !hasExtra {
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if k == key && key != ColRowID && obj[k] != nil {
				if !isRowIDText(obj[k], id) {
					diffs = append(diffs, fmt.Sprintf("field %s of after (%s) is not the row id %q and _extra is null", k, describe(obj[k]), id))
				}
				continue
			}
			if _, ok := r[k]; ok && !slices.Contains(systemColumns, k) || obj[k] == nil {
				continue
			}
			if slices.Contains(systemColumns, k) {
				diffs = append(diffs, fmt.Sprintf("field %s of after is named like a system column and _extra is null", k))
			} else {
				diffs = append(diffs, fmt.Sprintf("field %s of after (%s) has no column and _extra is null", k, describe(obj[k])))
			}
		}
	}
	return diffs
}

// isRowIDText reports whether a decoded JSON value's text is the row id
// (a string equal to it, or a number or boolean written as it).
func isRowIDText(v any, id string) bool {
	switch x := v.(type) {
	case string:
		return x == id
	case json.Number:
		return string(x) == id
	case bool:
		return strconv.FormatBool(x) == id
	}
	return false
}

// decodeJSON decodes JSON keeping numbers as their text.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// diffJSONText compares JSON text with a decoded JSON value.
func diffJSONText(text string, want any) string {
	got, err := decodeJSON([]byte(text))
	if err != nil {
		return fmt.Sprintf("not JSON (%v): %q", err, text)
	}
	if d := diffValue(want, typedJSON(got), false); d != "" {
		return "JSON text differs: " + d
	}
	return ""
}

// typedJSON turns the numbers of decoded JSON into the values of typed
// columns (int64 for integers, float64 otherwise), to compare JSON text
// with JSON.
func typedJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if isInt(x) {
			if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
				return n
			}
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = typedJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = typedJSON(e)
		}
		return out
	}
	return v
}

// isInt reports whether a JSON number is written as an integer.
func isInt(n json.Number) bool { return !strings.ContainsAny(string(n), ".eE") }

// diffValue compares a decoded JSON value with a column's value, types
// included: integers must be longs, other numbers doubles, strings strings
// (or timestamps of the same instant), objects structs and arrays lists
// (or either as JSON text). It returns "" when they match. With extra (the
// row's after is in _extra) a null anywhere in got matches: the writer
// leaves a value that does not fit null, also inside structs and lists.
func diffValue(jv, got any, extra bool) string {
	mismatch := func() string { return fmt.Sprintf("want %s, got %s", describe(jv), describe(got)) }
	if extra && got == nil {
		return ""
	}
	if jv == nil || got == nil {
		if jv == nil && got == nil {
			return ""
		}
		return mismatch()
	}
	if s, ok := got.(string); ok {
		switch jv.(type) {
		case map[string]any, []any:
			return diffJSONText(s, jv) // nested values kept as JSON text
		}
	}
	switch j := jv.(type) {
	case json.Number:
		if isInt(j) {
			want, err := strconv.ParseInt(string(j), 10, 64)
			if g, ok := got.(float64); ok && err == nil && g == float64(want) && int64(g) == want {
				return "" // an integer in a double column (the writer allows it when exact)
			}
			if g, ok := got.(int64); !ok || err != nil || g != want {
				return mismatch()
			}
			return ""
		}
		want, err := j.Float64()
		if g, ok := got.(float64); !ok || err != nil || g != want {
			return mismatch()
		}
	case string:
		switch g := got.(type) {
		case string:
			if g != j {
				return mismatch()
			}
		case time.Time:
			want, err := time.Parse(time.RFC3339Nano, j)
			if err != nil || !timeOf(want).Equal(g) {
				return mismatch()
			}
		default:
			return mismatch()
		}
	case bool:
		if g, ok := got.(bool); !ok || g != j {
			return mismatch()
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return mismatch()
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			if _, ok := j[k]; !ok && g[k] != nil {
				return fmt.Sprintf(".%s: want null (absent), got %s", k, describe(g[k]))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(j)) {
			gv, ok := g[k]
			if !ok && j[k] != nil {
				return fmt.Sprintf(".%s: want %s, the struct has no such field", k, describe(j[k]))
			}
			if d := diffValue(j[k], gv, extra); d != "" {
				return "." + k + ": " + d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(j) {
			return mismatch()
		}
		for i := range j {
			if d := diffValue(j[i], g[i], extra); d != "" {
				return fmt.Sprintf("[%d]: %s", i, d)
			}
		}
	default:
		return mismatch()
	}
	return ""
}

// describe prints a value with its kind: "long 5", "string \"5\"".
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case json.Number:
		if isInt(x) {
			return "long " + string(x)
		}
		return "double " + string(x)
	case string:
		return "string " + strconv.Quote(x)
	case int64:
		return "long " + strconv.FormatInt(x, 10)
	case float64:
		return "double " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case time.Time:
		return "timestamp " + x.UTC().Format(time.RFC3339Nano)
	case map[string]any:
		return fmt.Sprintf("struct %v", x)
	case []any:
		return fmt.Sprintf("list %v", x)
	}
	return fmt.Sprintf("%T %v", v, v)
}
