package codec_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// TestVectors checks the codec against the byte-exact frames that the
// original TypeScript code produced (shared/spec/vectors).
func TestVectors(t *testing.T) {
	cases := loadVectors(t)
	kinds := map[string]int{}
	for _, c := range cases {
		kinds[c.Kind]++
		t.Run(c.Name, func(t *testing.T) {
			if !codec.IsBinary(c.data) {
				t.Fatalf("%s does not start with the magic", c.File)
			}
			h, err := codec.ReadHeader(c.data)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if h.Type.String() != c.Kind {
				t.Errorf("header type %v, manifest kind %q", h.Type, c.Kind)
			}
			switch c.Kind {
			case "cdc_batch":
				checkBatchVector(t, c)
			case "ack":
				checkAckVector(t, c)
			case "nack":
				checkNackVector(t, c)
			default:
				t.Fatalf("unknown kind %q", c.Kind)
			}
		})
	}
	for _, k := range []string{"cdc_batch", "ack", "nack"} {
		if kinds[k] == 0 {
			t.Errorf("manifest has no %s case", k)
		}
	}
}

func checkBatchVector(t *testing.T, c vectorCase) {
	if c.ChecksumOK == nil {
		t.Fatalf("cdc_batch case without checksum_verifies_with_field_zeroed")
	}
	b, err := codec.DecodeBatch(c.data, codec.DecodeOptions{ValidateUTF8: true, ValidateJSON: true})
	if err != nil {
		t.Fatalf("DecodeBatch: %v", err)
	}
	// 1. What the legacy decoder reports.
	assertJSONEqual(t, "BatchMessage(decoded)", decodeAny(t, c.Decoded), toJSONAny(t, codec.BatchMessage(b)))

	// 2. Checksum: lenient decode reports it, strict decode enforces it.
	if got := binary.LittleEndian.Uint32(c.data[36:]); b.Checksum != got {
		t.Errorf("Checksum = 0x%08x, field holds 0x%08x", b.Checksum, got)
	}
	if b.ChecksumOK != *c.ChecksumOK {
		t.Errorf("ChecksumOK = %v, manifest says %v", b.ChecksumOK, *c.ChecksumOK)
	}
	_, err = codec.DecodeBatch(c.data, codec.DecodeOptions{StrictChecksum: true})
	if *c.ChecksumOK && err != nil {
		t.Errorf("strict decode of a frame with a valid checksum: %v", err)
	}
	if !*c.ChecksumOK && !isErr(err, codec.ErrChecksum) {
		t.Errorf("strict decode of a stale checksum: got %v, want ErrChecksum", err)
	}
	skip, err := codec.DecodeBatch(c.data, codec.DecodeOptions{SkipChecksum: true})
	if err != nil || skip.ChecksumOK {
		t.Errorf("SkipChecksum decode: err %v, ChecksumOK %v (want nil, false)", err, skip != nil && skip.ChecksumOK)
	}

	// 3. Re-encoding gives the same bytes except the checksum field, and the
	// new checksum verifies with the field zeroed.
	enc, err := codec.EncodeBatch(b)
	if err != nil {
		t.Fatalf("EncodeBatch: %v", err)
	}
	assertSameExceptChecksum(t, c.data, enc)
	if *c.ChecksumOK && !bytes.Equal(enc[36:40], c.data[36:40]) {
		t.Errorf("first-frame checksum: encoded % x, legacy % x", enc[36:40], c.data[36:40])
	}
	if _, err := codec.DecodeBatch(enc, codec.DecodeOptions{StrictChecksum: true}); err != nil {
		t.Errorf("strict decode of the re-encoded frame: %v", err)
	}

	// 4. The manifest's input, taken the way the legacy encoder takes it
	// (falsy before/after written as absent), encodes to the same message.
	msg, err := codec.ParseJSONMessage(c.Input)
	if err != nil {
		t.Fatalf("ParseJSONMessage(input): %v", err)
	}
	m, ok := msg.(*codec.CDCBatchMessage)
	if !ok {
		t.Fatalf("input parsed as %T", msg)
	}
	sameSpelling := true
	for i := range m.Entries {
		e := &m.Entries[i]
		for _, p := range []*json.RawMessage{&e.Before, &e.After} {
			if jsFalsy(*p) {
				*p = nil
				continue
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, *p); err != nil {
				t.Fatal(err)
			}
			*p = buf.Bytes()
		}
		if i < len(b.Entries) && (!bytes.Equal(e.Before, b.Entries[i].Before) || !bytes.Equal(e.After, b.Entries[i].After)) {
			sameSpelling = false
		}
	}
	ib, err := m.ToBatch()
	if err != nil {
		t.Fatalf("ToBatch(input): %v", err)
	}
	want := decodeAny(t, c.Decoded).(map[string]any)
	got := toJSONAny(t, codec.BatchMessage(ib)).(map[string]any)
	if !sameSpelling {
		// The manifest was written by another JSON printer (1e-07 for
		// JavaScript's 1e-7): the payload size then differs, nothing else.
		delete(want, "sizeBytes")
		delete(got, "sizeBytes")
	}
	assertJSONEqual(t, "BatchMessage(ToBatch(input))", want, got)
	if sameSpelling {
		ienc, err := codec.EncodeBatch(ib)
		if err != nil {
			t.Fatalf("EncodeBatch(input): %v", err)
		}
		assertSameExceptChecksum(t, c.data, ienc)
	}
}

func assertSameExceptChecksum(t *testing.T, want, got []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("encoded %d bytes, legacy frame has %d", len(got), len(want))
	}
	if !bytes.Equal(got[:36], want[:36]) || !bytes.Equal(got[40:], want[40:]) {
		for i := range got {
			if got[i] != want[i] && (i < 36 || i >= 40) {
				t.Fatalf("encoded frame differs at offset %d: 0x%02x, legacy 0x%02x\n got  % x\n want % x", i, got[i], want[i], got, want)
			}
		}
	}
}

func checkAckVector(t *testing.T, c vectorCase) {
	a, err := codec.DecodeAck(c.data)
	if err != nil {
		t.Fatalf("DecodeAck: %v", err)
	}
	assertJSONEqual(t, "decoded ack", decodeAny(t, c.Decoded), toJSONAny(t, ackMessage(a)))
	var in legacyAck
	if err := json.Unmarshal(c.Input, &in); err != nil {
		t.Fatal(err)
	}
	enc, err := codec.AppendAck(nil, ackFromMessage(t, in))
	if err != nil {
		t.Fatalf("AppendAck: %v", err)
	}
	if !bytes.Equal(enc, c.data) {
		t.Errorf("AppendAck(input):\n got  % x\n want % x", enc, c.data)
	}
	// Appending to a non-empty buffer keeps its prefix.
	prefix := []byte("prefix")
	enc2, err := codec.AppendAck(append([]byte(nil), prefix...), a)
	if err != nil || !bytes.Equal(enc2, append(prefix, c.data...)) {
		t.Errorf("AppendAck(prefix): %v\n got  % x", err, enc2)
	}
	// Decoding something else as an ack fails.
	if _, err := codec.DecodeNack(c.data); !isErr(err, codec.ErrUnknownType) {
		t.Errorf("DecodeNack(ack) = %v, want ErrUnknownType", err)
	}
	if _, err := codec.DecodeBatch(c.data, codec.DecodeOptions{}); !isErr(err, codec.ErrUnknownType) {
		t.Errorf("DecodeBatch(ack) = %v, want ErrUnknownType", err)
	}
}

func checkNackVector(t *testing.T, c vectorCase) {
	n, err := codec.DecodeNack(c.data)
	if err != nil {
		t.Fatalf("DecodeNack: %v", err)
	}
	assertJSONEqual(t, "decoded nack", decodeAny(t, c.Decoded), toJSONAny(t, nackMessage(n)))
	var in legacyNack
	if err := json.Unmarshal(c.Input, &in); err != nil {
		t.Fatal(err)
	}
	enc, err := codec.AppendNack(nil, nackFromMessage(t, in))
	if err != nil {
		t.Fatalf("AppendNack: %v", err)
	}
	if !bytes.Equal(enc, c.data) {
		t.Errorf("AppendNack(input):\n got  % x\n want % x", enc, c.data)
	}
	prefix := []byte("prefix")
	enc2, err := codec.AppendNack(append([]byte(nil), prefix...), n)
	if err != nil || !bytes.Equal(enc2, append(prefix, c.data...)) {
		t.Errorf("AppendNack(prefix): %v\n got  % x", err, enc2)
	}
	if _, err := codec.DecodeAck(c.data); !isErr(err, codec.ErrUnknownType) {
		t.Errorf("DecodeAck(nack) = %v, want ErrUnknownType", err)
	}
}
