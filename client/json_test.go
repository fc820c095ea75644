package client

import (
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

func TestParseJSONEntry(t *testing.T) {
	cases := []struct {
		name, in       string
		wantErr        bool
		op             codec.Op
		before, after  string
		seq, timestamp uint64
	}{
		{name: "insert", in: `{"sequence":1,"timestamp":1700000000000,"operation":"INSERT","table":"users","rowId":"r1","after":{"id":1, "n":"x"}}`,
			op: codec.OpInsert, after: `{"id":1, "n":"x"}`, seq: 1, timestamp: 1700000000000},
		{name: "update", in: `{"sequence":2,"timestamp":5,"operation":"UPDATE","table":"t","rowId":"r","before":{"a":1},"after":{"a":2}}`,
			op: codec.OpUpdate, before: `{"a":1}`, after: `{"a":2}`, seq: 2, timestamp: 5},
		{name: "delete with null after", in: `{"sequence":3,"operation":"DELETE","table":"t","rowId":"r","before":{"a":2},"after":null}`,
			op: codec.OpDelete, before: `{"a":2}`, seq: 3},
		{name: "unknown operation", in: `{"operation":"MERGE","table":"t"}`, wantErr: true},
		{name: "no table", in: `{"operation":"INSERT"}`, wantErr: true},
		{name: "not JSON", in: `{"operation":`, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseJSONEntry([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Op != tc.op || string(e.Before) != tc.before || string(e.After) != tc.after || e.Sequence != tc.seq || e.Timestamp != tc.timestamp {
				t.Fatalf("got %+v", e)
			}
			if (tc.before == "") != (e.Before == nil) || (tc.after == "") != (e.After == nil) {
				t.Fatalf("absent fields not nil: %+v", e)
			}
		})
	}
}
