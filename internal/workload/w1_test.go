package workload

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// TestAppendRow checks row(i) against the W1 row format of DESIGN.md, with
// score i*1.5 printed as JavaScript prints numbers.
func TestAppendRow(t *testing.T) {
	tests := []struct {
		i    int64
		want string
	}{
		{0, `{"id":0,"name":"user-0","email":"user0@example.com","age":20,"active":true,"score":0,"city":"City 0","tags":["a","b"]}`},
		{2, `{"id":2,"name":"user-2","email":"user2@example.com","age":22,"active":true,"score":3,"city":"City 2","tags":["a","b"]}`},
		{3, `{"id":3,"name":"user-3","email":"user3@example.com","age":23,"active":false,"score":4.5,"city":"City 3","tags":["a","b"]}`},
		{151, `{"id":151,"name":"user-151","email":"user151@example.com","age":21,"active":false,"score":226.5,"city":"City 51","tags":["a","b"]}`},
		{999, `{"id":999,"name":"user-999","email":"user999@example.com","age":69,"active":false,"score":1498.5,"city":"City 99","tags":["a","b"]}`},
		{123456789, `{"id":123456789,"name":"user-123456789","email":"user123456789@example.com","age":59,"active":false,"score":185185183.5,"city":"City 89","tags":["a","b"]}`},
	}
	for _, tc := range tests {
		if got := string(AppendRow(nil, tc.i)); got != tc.want {
			t.Errorf("row(%d):\n got  %s\n want %s", tc.i, got, tc.want)
		}
	}
	if got := string(AppendRow([]byte("x"), 1)); got[:1] != "x" || got[1:] != string(AppendRow(nil, 1)) {
		t.Errorf("AppendRow does not append: %s", got)
	}
}

func TestEntry(t *testing.T) {
	row := func(i int64) string { return string(AppendRow(nil, i)) }
	tests := []struct {
		i             int64
		op            codec.Op
		table         string
		before, after string
	}{
		{0, codec.OpInsert, "users", "", row(0)},
		{6, codec.OpInsert, "carts", "", row(6)},
		{7, codec.OpUpdate, "logs", row(6), row(7)},
		{8, codec.OpUpdate, "users", row(7), row(8)},
		{9, codec.OpDelete, "orders", row(8), ""},
		{10, codec.OpInsert, "items", "", row(10)},
		{1019, codec.OpDelete, "events", row(1018), ""},
	}
	for _, tc := range tests {
		e := Entry(tc.i)
		if e.Sequence != uint64(tc.i+1) || e.Timestamp != uint64(W1BaseTimestamp+tc.i) || e.Op != tc.op ||
			string(e.Table) != tc.table || string(e.RowID) != fmt.Sprintf("row-%d", tc.i) ||
			string(e.Before) != tc.before || string(e.After) != tc.after ||
			(tc.before == "") != (e.Before == nil) || (tc.after == "") != (e.After == nil) {
			t.Errorf("Entry(%d) = {seq %d ts %d %v %s %s before %q after %q}", tc.i, e.Sequence, e.Timestamp, e.Op, e.Table, e.RowID, e.Before, e.After)
		}
	}
}

func TestBatch(t *testing.T) {
	b := Batch("src", 2)
	if b.Sequence != 2 || b.Timestamp != W1BaseTimestamp+1000 || string(b.SourceID) != "src" || b.CorrelationID != nil || len(b.Entries) != W1BatchSize {
		t.Fatalf("Batch(src, 2) = seq %d ts %d source %q corr %q, %d entries", b.Sequence, b.Timestamp, b.SourceID, b.CorrelationID, len(b.Entries))
	}
	if e := b.Entries[0]; e.Sequence != 1001 || string(e.RowID) != "row-1000" {
		t.Errorf("first entry of batch 2: seq %d row %s", e.Sequence, e.RowID)
	}
	if e := b.Entries[999]; e.Sequence != 2000 || string(e.RowID) != "row-1999" {
		t.Errorf("last entry of batch 2: seq %d row %s", e.Sequence, e.RowID)
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		for _, p := range [][]byte{e.Before, e.After} {
			if p != nil && !json.Valid(p) {
				t.Fatalf("entry %d: invalid JSON %s", i, p)
			}
		}
	}
	// "Encoded in the binary codec it averages about 210 bytes per entry."
	per := float64(Batch("src", 1).EncodedSize()) / W1BatchSize
	if per < 170 || per > 240 { // batch 1 measures 195.5
		t.Errorf("W1 batch 1 is %.1f bytes per entry encoded, DESIGN.md says about 210", per)
	}
	if got := W1Tables(); len(got) != 8 || got[0] != "users" || got[7] != "logs" {
		t.Errorf("W1Tables() = %v", got)
	}
	W1Tables()[0] = "changed"
	if W1Tables()[0] != "users" {
		t.Error("W1Tables returns the package's array")
	}
}
