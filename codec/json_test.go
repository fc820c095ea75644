package codec_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

func TestParseJSONMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"connect", `{"type":"connect","timestamp":1764547200000,"sourceDoId":"shard-1","sourceShardName":"east",
			"lastAckSequence":41,"protocolVersion":1,"capabilities":{"binaryProtocol":true,"compression":false,
			"batching":true,"maxBatchSize":1000,"maxMessageSize":4194304},"correlationId":"c-9"}`,
			&codec.ConnectMessage{Type: "connect", Timestamp: 1764547200000, SourceDoID: "shard-1", SourceShardName: "east",
				LastAckSequence: 41, ProtocolVersion: 1, CorrelationID: "c-9",
				Capabilities: codec.Capabilities{BinaryProtocol: true, Batching: true, MaxBatchSize: 1000, MaxMessageSize: 4194304}}},
		{"connect minimal, unknown fields ignored", `{"type":"connect","timestamp":1,"sourceDoId":"s","lastAckSequence":0,
			"protocolVersion":1,"capabilities":{"binaryProtocol":false,"compression":false,"batching":false,"maxBatchSize":1,"maxMessageSize":2},"extra":[1,{}]}`,
			&codec.ConnectMessage{Type: "connect", Timestamp: 1, SourceDoID: "s", ProtocolVersion: 1,
				Capabilities: codec.Capabilities{MaxBatchSize: 1, MaxMessageSize: 2}}},
		{"heartbeat", ` {"type":"heartbeat","timestamp":1764547230000,"sourceDoId":"shard-1","lastAckSequence":9007199254740991,"pendingEntries":12} `,
			&codec.HeartbeatMessage{Type: "heartbeat", Timestamp: 1764547230000, SourceDoID: "shard-1", LastAckSequence: 9007199254740991, PendingEntries: 12}},
		{"flush_request", `{"type":"flush_request","timestamp":5,"sourceDoId":"分片","reason":"time_threshold"}`,
			&codec.FlushRequestMessage{Type: "flush_request", Timestamp: 5, SourceDoID: "分片", Reason: "time_threshold"}},
		{"cdc_batch", `{"type":"cdc_batch","timestamp":10,"correlationId":"c1","sourceDoId":"s","sourceShardName":"sh",
			"entries":[
			 {"sequence":1,"timestamp":11,"operation":"INSERT","table":"users","rowId":"u1","after":{"id":"u1","n":1.50,"z":null}},
			 {"sequence":2,"timestamp":12,"operation":"UPDATE","table":"users","rowId":"u1","before":{"id":"u1"},"after":{"id":"u1","n":2e3}},
			 {"sequence":3,"timestamp":13,"operation":"DELETE","table":"users","rowId":"u1","before":{"id":"u1"},"after":null},
			 {"sequence":4,"timestamp":14,"operation":"INSERT","table":"t","rowId":"r","after":[1,"two",true]}],
			"sequenceNumber":3,"firstEntrySequence":1,"lastEntrySequence":4,"sizeBytes":200,"isRetry":true,"retryCount":2}`,
			&codec.CDCBatchMessage{Type: "cdc_batch", Timestamp: 10, CorrelationID: "c1", SourceDoID: "s", SourceShardName: "sh",
				Entries: []codec.JSONEntry{
					{Sequence: 1, Timestamp: 11, Operation: "INSERT", Table: "users", RowID: "u1", After: json.RawMessage(`{"id":"u1","n":1.50,"z":null}`)},
					{Sequence: 2, Timestamp: 12, Operation: "UPDATE", Table: "users", RowID: "u1", Before: json.RawMessage(`{"id":"u1"}`), After: json.RawMessage(`{"id":"u1","n":2e3}`)},
					{Sequence: 3, Timestamp: 13, Operation: "DELETE", Table: "users", RowID: "u1", Before: json.RawMessage(`{"id":"u1"}`), After: json.RawMessage(`null`)},
					{Sequence: 4, Timestamp: 14, Operation: "INSERT", Table: "t", RowID: "r", After: json.RawMessage(`[1,"two",true]`)},
				},
				SequenceNumber: 3, FirstEntrySequence: 1, LastEntrySequence: 4, SizeBytes: 200, IsRetry: true, RetryCount: 2}},
		{"cdc_batch empty", `{"type":"cdc_batch","timestamp":1,"sourceDoId":"s","entries":[],"sequenceNumber":1,"isRetry":false,"retryCount":0}`,
			&codec.CDCBatchMessage{Type: "cdc_batch", Timestamp: 1, SourceDoID: "s", Entries: []codec.JSONEntry{}, SequenceNumber: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := codec.ParseJSONMessage([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseJSONMessage: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
			// What we parse, we can print and parse again to the same thing.
			out, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			again, err := codec.ParseJSONMessage(out)
			if err != nil {
				t.Fatalf("re-parse %s: %v", out, err)
			}
			out2, _ := json.Marshal(again)
			if string(out) != string(out2) {
				t.Errorf("marshal not stable:\n%s\n%s", out, out2)
			}
		})
	}
}

// TestCDCBatchMessageToBatch converts a JSON batch to a Batch and round-trips
// it through the binary codec.
func TestCDCBatchMessageToBatch(t *testing.T) {
	in := `{"type":"cdc_batch","timestamp":10,"correlationId":"c1","sourceDoId":"s","entries":[
		{"sequence":1,"timestamp":11,"operation":"INSERT","table":"users","rowId":"u1","after":{"id":"u1","n":1.50}},
		{"sequence":2,"timestamp":12,"operation":"UPDATE","table":"users","rowId":"u1","before":{"id":"u1"},"after":{"id":"u1","n":2e3}},
		{"sequence":3,"timestamp":13,"operation":"DELETE","table":"users","rowId":"u1","before":{"id":"u1"},"after":null},
		{"sequence":4,"timestamp":14,"operation":"INSERT","table":"表","rowId":"","before": null ,"after":"text"}],
		"sequenceNumber":3,"firstEntrySequence":1,"lastEntrySequence":4,"sizeBytes":200,"isRetry":true,"retryCount":2}`
	msg, err := codec.ParseJSONMessage([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	m := msg.(*codec.CDCBatchMessage)
	b, err := m.ToBatch()
	if err != nil {
		t.Fatal(err)
	}
	want := &codec.Batch{Timestamp: 10, Sequence: 3, Retry: true, SourceID: []byte("s"), CorrelationID: []byte("c1"),
		Entries: []codec.Entry{
			{Sequence: 1, Timestamp: 11, Op: codec.OpInsert, Table: []byte("users"), RowID: []byte("u1"), After: []byte(`{"id":"u1","n":1.50}`)},
			{Sequence: 2, Timestamp: 12, Op: codec.OpUpdate, Table: []byte("users"), RowID: []byte("u1"), Before: []byte(`{"id":"u1"}`), After: []byte(`{"id":"u1","n":2e3}`)},
			{Sequence: 3, Timestamp: 13, Op: codec.OpDelete, Table: []byte("users"), RowID: []byte("u1"), Before: []byte(`{"id":"u1"}`)},
			{Sequence: 4, Timestamp: 14, Op: codec.OpInsert, Table: []byte("表"), RowID: []byte(""), After: []byte(`"text"`)},
		}}
	if d := batchDiff(want, b); d != "" {
		t.Fatalf("ToBatch:\n%s", d)
	}
	frame, err := codec.EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if int(b.PayloadSize) != len(frame)-40-len(b.SourceID)-len(b.CorrelationID) {
		t.Errorf("ToBatch PayloadSize %d, frame's P is %d", b.PayloadSize, le.Uint32(frame[30:]))
	}
	d, err := codec.DecodeBatch(frame, codec.DecodeOptions{StrictChecksum: true, ValidateUTF8: true, ValidateJSON: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := batchDiff(b, d); diff != "" {
		t.Fatalf("decode(encode(ToBatch)):\n%s", diff)
	}
	if d.PayloadSize != b.PayloadSize {
		t.Errorf("PayloadSize %d after decoding, %d from ToBatch", d.PayloadSize, b.PayloadSize)
	}
	// And back to the legacy view: the same entries, sizeBytes is P, retryCount 0.
	bm := codec.BatchMessage(d)
	if bm.SizeBytes != uint64(b.PayloadSize) || bm.RetryCount != 0 || bm.FirstEntrySequence != 1 || bm.LastEntrySequence != 4 || !bm.IsRetry {
		t.Errorf("BatchMessage: %+v", bm)
	}
	if len(bm.Entries) != 4 || bm.Entries[2].After != nil || string(bm.Entries[3].After) != `"text"` || bm.Entries[1].Operation != "UPDATE" {
		t.Errorf("BatchMessage entries: %+v", bm.Entries)
	}

	// Without a correlation id the binary frame has no HAS_CORRELATION_ID flag.
	m.CorrelationID = ""
	b, err = m.ToBatch()
	if err != nil || b.CorrelationID != nil {
		t.Fatalf("ToBatch without correlation id: %v, %q", err, b.CorrelationID)
	}
	frame, _ = codec.EncodeBatch(b)
	if h, _ := codec.ReadHeader(frame); h.Flags != codec.FlagIsRetry {
		t.Errorf("flags 0x%02x, want IS_RETRY only", h.Flags)
	}

	// An unknown operation is an error.
	m.Entries[0].Operation = "UPSERT"
	if _, err := m.ToBatch(); !isErr(err, codec.ErrUnknownOperation) {
		t.Errorf("ToBatch with operation UPSERT: %v", err)
	}
}

func TestNames(t *testing.T) {
	for op := codec.OpInsert; op <= codec.OpDelete; op++ {
		if p, err := codec.ParseOp(op.String()); err != nil || p != op {
			t.Errorf("ParseOp(%v) = %v, %v", op, p, err)
		}
	}
	if _, err := codec.ParseOp("insert"); err == nil {
		t.Error("ParseOp is case-sensitive on the legacy side")
	}
	for s := codec.AckOK; s <= codec.AckFallback; s++ {
		if p, err := codec.ParseAckStatus(s.String()); err != nil || p != s {
			t.Errorf("ParseAckStatus(%v) = %v, %v", s, p, err)
		}
	}
	for r := codec.NackBufferFull; r <= codec.NackShuttingDown; r++ {
		if p, err := codec.ParseNackReason(r.String()); err != nil || p != r {
			t.Errorf("ParseNackReason(%v) = %v, %v", r, p, err)
		}
	}
	if codec.Op(3).String() != "Op(3)" || codec.AckStatus(9).String() != "AckStatus(9)" ||
		codec.NackReason(6).String() != "NackReason(6)" || codec.MessageType(9).String() != "type(9)" {
		t.Error("unknown codes print their number")
	}
	if _, err := codec.ParseAckStatus("great"); err == nil {
		t.Error("ParseAckStatus(great) succeeded")
	}
	if _, err := codec.ParseNackReason("tired"); err == nil {
		t.Error("ParseNackReason(tired) succeeded")
	}
	for typ, name := range map[codec.MessageType]string{1: "cdc_batch", 2: "ack", 3: "nack", 4: "connect", 5: "heartbeat", 6: "flush_request", 7: "status", 8: "disconnect"} {
		if typ.String() != name {
			t.Errorf("MessageType(%d) = %q, want %q", typ, typ, name)
		}
	}
}
