package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// sendFields maps every accepted input field name (legacy camelCase, proto
// snake_case, proto JSON lowerCamelCase) to its canonical name.
func sendFields() map[string]string {
	return map[string]string{
		"sequence": "sequence", "operation": "operation", "table": "table", "before": "before", "after": "after",
		"timestamp": "timestamp", "timestamp_ms": "timestamp", "timestampMs": "timestamp",
		"rowId": "rowId", "row_id": "rowId",
	}
}

// parseSendLine parses one line of send's input (see sendInputDoc). It is
// strict where a lenient parser would store a default: an unknown field (a
// misspelt row_id was silently dropped), a missing timestamp (stored as
// 1970) or a missing sequence is an error naming the field.
func parseSendLine(line []byte) (codec.Entry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return codec.Entry{}, fmt.Errorf("not a JSON object: %w", err)
	}
	names := sendFields()
	fields := make(map[string]json.RawMessage, len(raw))
	given := make(map[string]string, len(raw))
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		canon, ok := names[k]
		if !ok {
			return codec.Entry{}, fmt.Errorf("unknown field %q (see 'lakehouse send -h')", k)
		}
		if prev, dup := given[canon]; dup {
			return codec.Entry{}, fmt.Errorf("fields %q and %q are the same field", prev, k)
		}
		given[canon] = k
		fields[canon] = raw[k]
	}
	var e codec.Entry
	need := func(canon string, dst any) error {
		v, ok := fields[canon]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return fmt.Errorf("missing required field %q", canon)
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("field %q: %w", given[canon], err)
		}
		return nil
	}
	var ts int64
	var op, table, rowID string
	for _, f := range []struct {
		name string
		dst  any
	}{{"sequence", &e.Sequence}, {"timestamp", &ts}, {"operation", &op}, {"table", &table}, {"rowId", &rowID}} {
		if err := need(f.name, f.dst); err != nil {
			return codec.Entry{}, err
		}
	}
	if e.Sequence == 0 {
		return codec.Entry{}, fmt.Errorf("field %q: must be above 0", given["sequence"])
	}
	if ts <= 0 {
		return codec.Entry{}, fmt.Errorf("field %q: %d is not a time (ms since the Unix epoch)", given["timestamp"], ts)
	}
	e.Timestamp = uint64(ts)
	o, err := protomap.ParseOperation(op)
	if err != nil {
		return codec.Entry{}, fmt.Errorf("field \"operation\": %q is not INSERT, UPDATE or DELETE", op)
	}
	e.Op = o
	if table == "" {
		return codec.Entry{}, fmt.Errorf("field \"table\" is empty")
	}
	if rowID == "" {
		return codec.Entry{}, fmt.Errorf("field %q is empty", given["rowId"])
	}
	e.Table, e.RowID = []byte(table), []byte(rowID)
	// Row images are kept as the JSON text given; null means absent.
	for _, img := range []struct {
		name string
		dst  *[]byte
	}{{"before", &e.Before}, {"after", &e.After}} {
		if v, ok := fields[img.name]; ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			*img.dst = bytes.TrimSpace(v)
		}
	}
	return e, nil
}
