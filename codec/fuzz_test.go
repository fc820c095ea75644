package codec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Fuzz targets. The seed corpus (every vector, a W1 frame, the frames of the
// unit tests and testdata/fuzz/<name>/) runs in a plain `go test`; fuzz with
// e.g. go test -run='^$' -fuzz=FuzzDecodeBatch -fuzztime=45s ./codec

// addFrameSeeds adds every binary frame the tests know.
func addFrameSeeds(f *testing.F) {
	for _, c := range loadVectors(f) {
		f.Add(c.data)
	}
	f.Add(w1Frame(f))
	f.Add(testBatchFrame(f))
	empty, _ := codec.EncodeBatch(&codec.Batch{SourceID: []byte("s")})
	f.Add(empty)
	ack, _ := codec.AppendAck(nil, &codec.Ack{Timestamp: 1, Sequence: 2, Status: codec.AckDuplicate, CorrelationID: []byte("c")})
	f.Add(ack)
	nack, _ := codec.AppendNack(nil, &codec.Nack{Timestamp: 1, Sequence: 2, Reason: codec.NackRateLimited, Message: "slow down"})
	f.Add(nack)
}

// checkDecodeError checks the error contract: a *DecodeError wrapping a sentinel.
func checkDecodeError(t *testing.T, err error, frameLen int) {
	t.Helper()
	var de *codec.DecodeError
	if !errors.As(err, &de) || !wrapsSentinel(err) {
		t.Fatalf("error %v (%T) is not a *DecodeError wrapping a sentinel", err, err)
	}
	if de.Offset < 0 || de.Offset > frameLen {
		t.Fatalf("error offset %d outside a %d-byte input: %v", de.Offset, frameLen, err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, opts := range []codec.DecodeOptions{{SkipChecksum: true}, {StrictChecksum: true, ValidateUTF8: true, ValidateJSON: true}} {
			if _, err := codec.DecodeBatch(data, opts); err != nil {
				checkDecodeError(t, err, len(data))
			}
		}
		b, err := codec.DecodeBatch(data, codec.DecodeOptions{})
		if err != nil {
			checkDecodeError(t, err, len(data))
			return
		}
		orig := append([]byte(nil), data...)
		// The lenient checksum report is right.
		crc := crc32.NewIEEE()
		crc.Write(data[:36])
		crc.Write([]byte{0, 0, 0, 0})
		crc.Write(data[40:])
		if b.ChecksumOK != (crc.Sum32() == b.Checksum) {
			t.Fatalf("ChecksumOK %v, checksum 0x%08x, computed 0x%08x", b.ChecksumOK, b.Checksum, crc.Sum32())
		}
		if b.PayloadSize != le.Uint32(data[30:]) || len(b.Entries) != int(le.Uint32(data[26:])) {
			t.Fatalf("PayloadSize %d / %d entries do not match the header", b.PayloadSize, len(b.Entries))
		}
		// Re-encoding gives the same frame up to what the encoder normalises:
		// flags (HAS_CORRELATION_ID only with a non-empty id; unknown bits
		// dropped), the reserved bytes and the checksum.
		enc, err := codec.EncodeBatch(b)
		if err != nil {
			t.Fatalf("re-encode of a decoded batch: %v", err)
		}
		if len(enc) != len(data) || !bytes.Equal(enc[:4], data[:4]) || !bytes.Equal(enc[8:36], data[8:36]) || !bytes.Equal(enc[40:], data[40:]) {
			t.Fatalf("re-encoded frame differs:\n got  % x\n want % x", enc, data)
		}
		wantFlags := codec.Flags(data[4]) & codec.FlagIsRetry
		if len(b.CorrelationID) > 0 {
			wantFlags |= codec.FlagHasCorrelation
		}
		if codec.Flags(enc[4]) != wantFlags {
			t.Fatalf("re-encoded flags 0x%02x, want 0x%02x", enc[4], wantFlags)
		}
		d, err := codec.DecodeBatch(enc, codec.DecodeOptions{StrictChecksum: true})
		if err != nil {
			t.Fatalf("decode of the re-encoded frame: %v", err)
		}
		if len(b.CorrelationID) == 0 {
			b.CorrelationID = nil // HAS_CORRELATION_ID with length 0: the same as absent
		}
		if diff := batchDiff(b, d); diff != "" {
			t.Fatalf("decode(encode(decode(frame))) differs:\n%s", diff)
		}
		owned, err := codec.DecodeBatchOwned(data, codec.DecodeOptions{})
		if err != nil {
			t.Fatalf("DecodeBatchOwned fails where DecodeBatch succeeded: %v", err)
		}
		clone := b.Clone()
		copy(data, bytes.Repeat([]byte{0xA5}, len(data)))
		for what, got := range map[string]*codec.Batch{"owned": owned, "clone": clone} {
			if len(got.CorrelationID) == 0 {
				got.CorrelationID = nil
			}
			if diff := batchDiff(d, got); diff != "" {
				t.Fatalf("%s batch changed with the frame:\n%s", what, diff)
			}
		}
		copy(data, orig)
	})
}

// canonicalHeader reports whether a frame's header is what our encoders
// write: reserved bytes zero and no flag but HAS_CORRELATION_ID.
func canonicalHeader(data []byte) bool {
	return data[4]&^byte(codec.FlagHasCorrelation) == 0 && data[5] == 0 && data[6] == 0 && data[7] == 0
}

func FuzzDecodeAck(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := codec.DecodeAck(data)
		if err != nil {
			checkDecodeError(t, err, len(data))
			return
		}
		enc, err := codec.AppendAck(nil, a)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if canonicalHeader(data) && (len(a.CorrelationID) > 0 || data[4] == 0) && !bytes.Equal(enc, data) {
			t.Fatalf("re-encoded ack differs:\n got  % x\n want % x", enc, data)
		}
		a2, err := codec.DecodeAck(enc)
		if err != nil {
			t.Fatalf("decode of the re-encoded ack: %v", err)
		}
		if a2.Timestamp != a.Timestamp || a2.Sequence != a.Sequence || a2.Status != a.Status || !bytes.Equal(a2.CorrelationID, a.CorrelationID) {
			t.Fatalf("ack %+v re-decoded as %+v", a, a2)
		}
		if enc2, _ := codec.AppendAck(nil, a2); !bytes.Equal(enc2, enc) {
			t.Fatalf("ack encoding not stable:\n% x\n% x", enc, enc2)
		}
	})
}

func FuzzDecodeNack(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := codec.DecodeNack(data)
		if err != nil {
			checkDecodeError(t, err, len(data))
			return
		}
		enc, err := codec.AppendNack(nil, n)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if canonicalHeader(data) && (len(n.CorrelationID) > 0 || data[4] == 0) && data[25] <= 1 && !bytes.Equal(enc, data) {
			t.Fatalf("re-encoded nack differs:\n got  % x\n want % x", enc, data)
		}
		n2, err := codec.DecodeNack(enc)
		if err != nil {
			t.Fatalf("decode of the re-encoded nack: %v", err)
		}
		if n2.Timestamp != n.Timestamp || n2.Sequence != n.Sequence || n2.Reason != n.Reason || n2.ShouldRetry != n.ShouldRetry ||
			n2.RetryDelayMs != n.RetryDelayMs || n2.Message != n.Message || !bytes.Equal(n2.CorrelationID, n.CorrelationID) {
			t.Fatalf("nack %+v re-decoded as %+v", n, n2)
		}
		if enc2, _ := codec.AppendNack(nil, n2); !bytes.Equal(enc2, enc) {
			t.Fatalf("nack encoding not stable:\n% x\n% x", enc, enc2)
		}
	})
}

func FuzzParseJSONMessage(f *testing.F) {
	for _, c := range loadVectors(f) {
		f.Add([]byte(c.Input))
		f.Add(c.data) // binary frames are not JSON
	}
	for _, s := range []string{
		`{"type":"connect","timestamp":1764547200000,"sourceDoId":"shard-1","lastAckSequence":0,"protocolVersion":1,"capabilities":{"binaryProtocol":true,"compression":false,"batching":true,"maxBatchSize":1000,"maxMessageSize":4194304}}`,
		`{"type":"heartbeat","timestamp":1,"sourceDoId":"s","lastAckSequence":3,"pendingEntries":0}`,
		`{"type":"flush_request","timestamp":1,"sourceDoId":"s","reason":"manual"}`,
		`{"type":"cdc_batch","timestamp":1,"sourceDoId":"s","entries":[{"sequence":1,"timestamp":2,"operation":"DELETE","table":"t","rowId":"r","before":{"a":[1,2.5,null]},"after":null}],"sequenceNumber":1,"isRetry":true,"retryCount":1}`,
		`{"type":"status"}`, `{"type":1}`, `[]`, `null`, `ping`, "{\"type\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := codec.ParseJSONMessage(data)
		if err != nil {
			checkDecodeError(t, err, len(data))
			return
		}
		out, err := json.Marshal(msg)
		if err != nil {
			t.Fatalf("marshal %T: %v", msg, err)
		}
		msg2, err := codec.ParseJSONMessage(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if out2, _ := json.Marshal(msg2); !bytes.Equal(out, out2) {
			t.Fatalf("JSON not stable:\n%s\n%s", out, out2)
		}
		m, ok := msg.(*codec.CDCBatchMessage)
		if !ok {
			return
		}
		b, err := m.ToBatch()
		if err != nil {
			if !errors.Is(err, codec.ErrUnknownOperation) {
				t.Fatalf("ToBatch: %v", err)
			}
			return
		}
		frame, err := codec.EncodeBatch(b)
		if err != nil {
			if !errors.Is(err, codec.ErrFieldTooLong) && !errors.Is(err, codec.ErrTooLarge) {
				t.Fatalf("EncodeBatch(ToBatch): %v", err)
			}
			return
		}
		d, err := codec.DecodeBatch(frame, codec.DecodeOptions{StrictChecksum: true, ValidateUTF8: true, ValidateJSON: true})
		if err != nil {
			t.Fatalf("decode of a JSON batch's frame: %v", err)
		}
		if diff := batchDiff(b, d); diff != "" {
			t.Fatalf("JSON batch round trip:\n%s", diff)
		}
		if d.PayloadSize != b.PayloadSize {
			t.Fatalf("PayloadSize %d, ToBatch said %d", d.PayloadSize, b.PayloadSize)
		}
	})
}

// FuzzReadHeader dispatches any input the way the WebSocket bridge does:
// binary frames by type, anything else as JSON text.
func FuzzReadHeader(f *testing.F) {
	addFrameSeeds(f)
	f.Add([]byte(`{"type":"heartbeat","timestamp":1,"sourceDoId":"s","lastAckSequence":3,"pendingEntries":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := codec.ReadHeader(data)
		if !codec.IsBinary(data) {
			if err == nil {
				t.Fatalf("ReadHeader accepted a frame without the magic")
			}
			if _, err := codec.ParseJSONMessage(data); err != nil {
				checkDecodeError(t, err, len(data))
			}
			return
		}
		if err != nil {
			checkDecodeError(t, err, len(data))
			return
		}
		if len(data) < codec.HeaderSize || data[2] != codec.Version || h.Type != codec.MessageType(data[3]) ||
			h.Flags != codec.Flags(data[4]) || h.Timestamp != le.Uint64(data[8:]) || h.Sequence != le.Uint64(data[16:]) {
			t.Fatalf("header %+v does not match % x", h, data[:min(len(data), 24)])
		}
		switch h.Type {
		case codec.TypeCDCBatch:
			_, err = codec.DecodeBatch(data, codec.DecodeOptions{ValidateUTF8: true})
		case codec.TypeAck:
			_, err = codec.DecodeAck(data)
		case codec.TypeNack:
			_, err = codec.DecodeNack(data)
		default:
			return
		}
		if err != nil {
			checkDecodeError(t, err, len(data))
		}
	})
}
