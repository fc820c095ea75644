package main

import (
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

func TestParseSendLine(t *testing.T) {
	ok := []struct {
		name, line string
		want       codec.Entry
	}{
		{"legacy names", `{"sequence":1,"timestamp":1764547200001,"operation":"INSERT","table":"users","rowId":"u1","after":{"id": "u1"}}`,
			codec.Entry{Sequence: 1, Timestamp: 1764547200001, Op: codec.OpInsert, Table: []byte("users"), RowID: []byte("u1"), After: []byte(`{"id": "u1"}`)}},
		{"proto names", `{"sequence":2,"timestamp_ms":1764547200002,"operation":"OPERATION_DELETE","table":"users","row_id":"u1","before":{"id":1},"after":null}`,
			codec.Entry{Sequence: 2, Timestamp: 1764547200002, Op: codec.OpDelete, Table: []byte("users"), RowID: []byte("u1"), Before: []byte(`{"id":1}`)}},
		{"proto JSON names", `{"sequence":3,"timestampMs":1764547200003,"operation":"UPDATE","table":"t","rowId":"r","before":1,"after":2}`,
			codec.Entry{Sequence: 3, Timestamp: 1764547200003, Op: codec.OpUpdate, Table: []byte("t"), RowID: []byte("r"), Before: []byte("1"), After: []byte("2")}},
	}
	for _, tc := range ok {
		e, err := parseSendLine([]byte(tc.line))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if e.Sequence != tc.want.Sequence || e.Timestamp != tc.want.Timestamp || e.Op != tc.want.Op || string(e.Table) != string(tc.want.Table) ||
			string(e.RowID) != string(tc.want.RowID) || string(e.Before) != string(tc.want.Before) || string(e.After) != string(tc.want.After) {
			t.Errorf("%s: got %+v", tc.name, e)
		}
	}
	bad := []struct{ name, line, want string }{
		{"unknown field", `{"sequence":1,"timestamp":1,"operation":"INSERT","table":"t","rowid":"r"}`, `unknown field "rowid"`},
		{"missing timestamp", `{"sequence":1,"operation":"INSERT","table":"t","rowId":"r","after":1}`, `missing required field "timestamp"`},
		{"missing row id", `{"sequence":1,"timestamp":1,"operation":"INSERT","table":"t","after":1}`, `missing required field "rowId"`},
		{"both spellings", `{"sequence":1,"timestamp":1,"operation":"INSERT","table":"t","rowId":"r","row_id":"r"}`, `the same field`},
		{"bad operation", `{"sequence":1,"timestamp":1,"operation":"UPSERT","table":"t","rowId":"r"}`, `"UPSERT" is not INSERT`},
		{"zero sequence", `{"sequence":0,"timestamp":1,"operation":"INSERT","table":"t","rowId":"r"}`, `must be above 0`},
		{"string sequence", `{"sequence":"1","timestamp":1,"operation":"INSERT","table":"t","rowId":"r"}`, `field "sequence"`},
		{"not an object", `[1]`, `not a JSON object`},
	}
	for _, tc := range bad {
		if _, err := parseSendLine([]byte(tc.line)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
