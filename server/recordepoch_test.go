package server

import (
	"bytes"
	"testing"
)

// TestWALRecordEpoch: a record with a lease epoch round-trips as version 2;
// one without stays version 1 (single-instance logs are unchanged).
func TestWALRecordEpoch(t *testing.T) {
	for _, epoch := range []uint64{0, 7} {
		rec := walRecord{SourceID: "s", ShardName: "sh", Seq: 3, ArrivalMs: 5, Epoch: epoch, Frame: []byte("frame")}
		data := rec.appendTo(nil)
		if len(data) != rec.size() {
			t.Fatalf("epoch %d: %d bytes, size() %d", epoch, len(data), rec.size())
		}
		if want := byte(walRecordVersion + min(epoch, 1)); data[0] != want {
			t.Errorf("epoch %d: version %d, want %d", epoch, data[0], want)
		}
		got, err := decodeWALRecord(data)
		if err != nil || got.Epoch != epoch || got.Seq != 3 || !bytes.Equal(got.Frame, rec.Frame) {
			t.Errorf("epoch %d: decoded %+v, %v", epoch, got, err)
		}
		if _, err := decodeWALRecord(data[:len(data)-len(rec.Frame)-3]); epoch != 0 && err == nil {
			t.Errorf("epoch %d: truncated record decoded", epoch)
		}
	}
}

// TestWALRecordPutTo: putTo, which encodes a record in place in the log's
// buffer, writes exactly what appendTo does, for both record versions.
func TestWALRecordPutTo(t *testing.T) {
	for _, epoch := range []uint64{0, 9} {
		rec := walRecord{SourceID: "src", ShardName: "shard-1", Seq: 11, ArrivalMs: 13, Epoch: epoch, Frame: []byte("a frame")}
		dst := bytes.Repeat([]byte{0xAA}, rec.size())
		rec.putTo(dst)
		if want := rec.appendTo(nil); !bytes.Equal(dst, want) {
			t.Errorf("epoch %d: putTo wrote %x, want %x", epoch, dst, want)
		}
	}
}
