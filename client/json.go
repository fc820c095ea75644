package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// ParseJSONEntry parses one WAL entry in the legacy JSON form,
// {"sequence":..,"timestamp":..,"operation":"INSERT","table":..,"rowId":..,
// "before":{..},"after":{..}}. before and after keep their JSON text exactly
// as given; null or missing means absent.
func ParseJSONEntry(b []byte) (Entry, error) {
	var je codec.JSONEntry
	if err := json.Unmarshal(b, &je); err != nil {
		return Entry{}, fmt.Errorf("client: invalid JSON entry: %w", err)
	}
	op, err := codec.ParseOp(je.Operation)
	if err != nil {
		return Entry{}, fmt.Errorf("client: JSON entry: %w", err)
	}
	if je.Table == "" {
		return Entry{}, errors.New("client: JSON entry without a table")
	}
	e := Entry{
		Sequence:  je.Sequence,
		Timestamp: je.Timestamp,
		Op:        op,
		Table:     []byte(je.Table),
		RowID:     []byte(je.RowID),
	}
	if present(je.Before) {
		e.Before = []byte(je.Before)
	}
	if present(je.After) {
		e.After = []byte(je.After)
	}
	return e, nil
}

func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}
