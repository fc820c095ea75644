package codec_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
)

var le = binary.LittleEndian

// sentinels are the errors every decode error must wrap one of.
var sentinels = []error{
	codec.ErrTruncated, codec.ErrTooLarge, codec.ErrBadMagic, codec.ErrUnsupportedVersion,
	codec.ErrUnknownType, codec.ErrUnknownOperation, codec.ErrCountMismatch, codec.ErrTrailingBytes,
	codec.ErrChecksum, codec.ErrCompressed, codec.ErrInvalidUTF8, codec.ErrInvalidJSON,
	codec.ErrFieldTooLong, codec.ErrInvalidMessage,
}

// isErr reports whether err wraps target inside a *codec.DecodeError.
func isErr(err, target error) bool {
	var de *codec.DecodeError
	return errors.Is(err, target) && errors.As(err, &de)
}

func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// testBatch is a small batch with every kind of field; its frame layout:
// 40 header, 3 "src", 2 "c1", entries block at 45 (count), entry 0 at 49
// (table at 78, row id at 79, before at 80, after at 87), entry 1 after it.
func testBatch() *codec.Batch {
	return &codec.Batch{
		Timestamp:     1764547200000,
		Sequence:      7,
		SourceID:      []byte("src"),
		CorrelationID: []byte("c1"),
		Entries: []codec.Entry{
			{Sequence: 1, Timestamp: 2, Op: codec.OpUpdate, Table: []byte("t"), RowID: []byte("r"),
				Before: []byte(`{"a":0}`), After: []byte(`{"a":1}`)},
			{Sequence: 2, Timestamp: 3, Op: codec.OpDelete, Table: []byte("t"), RowID: []byte("s"),
				Before: []byte(`{"a":1}`)},
		},
	}
}

const (
	tbEntries = 45 // entries block (count) of testBatch's frame
	tbEntry0  = 49 // first entry
	tbTable0  = tbEntry0 + 29
	tbBefore0 = tbTable0 + 2
	tbAfter0  = tbBefore0 + 7
	tbEntry1  = tbAfter0 + 7
)

func testBatchFrame(t testing.TB) []byte {
	f, err := codec.EncodeBatch(testBatch())
	if err != nil {
		t.Fatal(err)
	}
	if string(f[tbTable0:tbTable0+2]) != "tr" || string(f[tbAfter0:tbAfter0+7]) != `{"a":1}` {
		t.Fatalf("testBatch layout changed: % x", f)
	}
	return f
}

// mut returns a copy of frame changed by fn.
func mut(frame []byte, fn func(f []byte)) []byte {
	f := append([]byte(nil), frame...)
	fn(f)
	return f
}

// fixCRC rewrites a batch frame's checksum, so that a test of another error
// also passes a strict checksum check.
func fixCRC(f []byte) []byte {
	le.PutUint32(f[36:], 0)
	b := crc32.ChecksumIEEE(f)
	le.PutUint32(f[36:], b)
	return f
}

type decodeFunc func([]byte) error

func decBatch(opts codec.DecodeOptions) decodeFunc {
	return func(f []byte) error { _, err := codec.DecodeBatch(f, opts); return err }
}

var (
	decLenient decodeFunc = decBatch(codec.DecodeOptions{})
	decStrict  decodeFunc = decBatch(codec.DecodeOptions{StrictChecksum: true, ValidateUTF8: true, ValidateJSON: true})
	decOwned   decodeFunc = func(f []byte) error { _, err := codec.DecodeBatchOwned(f, codec.DecodeOptions{}); return err }
	decInto    decodeFunc = func(f []byte) error { var b codec.Batch; return codec.DecodeBatchInto(&b, f, codec.DecodeOptions{}) }
	decAck     decodeFunc = func(f []byte) error { _, err := codec.DecodeAck(f); return err }
	decNack    decodeFunc = func(f []byte) error { _, err := codec.DecodeNack(f); return err }
	decHeader  decodeFunc = func(f []byte) error { _, err := codec.ReadHeader(f); return err }
	decJSON    decodeFunc = func(f []byte) error { _, err := codec.ParseJSONMessage(f); return err }
)

func TestDecodeErrors(t *testing.T) {
	bf := testBatchFrame(t)
	ack, _ := codec.AppendAck(nil, &codec.Ack{Timestamp: 1, Sequence: 2, Status: codec.AckPersisted, CorrelationID: []byte("corr")})
	ackNoCorr, _ := codec.AppendAck(nil, &codec.Ack{Timestamp: 1, Sequence: 2})
	nack, _ := codec.AppendNack(nil, &codec.Nack{Timestamp: 1, Sequence: 2, Reason: codec.NackBufferFull,
		ShouldRetry: true, RetryDelayMs: 5000, Message: "full", CorrelationID: []byte("corr")})
	huge := make([]byte, codec.MaxMessageSize+1)
	copy(huge, bf)

	const anyOff = -1 // offset not checked
	tests := []struct {
		name   string
		frame  []byte
		decode decodeFunc
		want   error
		field  string // substring of DecodeError.Field
		offset int
	}{
		{"bad magic", mut(bf, func(f []byte) { f[0] = 0xEF; f[1] = 0xBE }), decLenient, codec.ErrBadMagic, "magic", 0},
		{"bad magic ack", mut(ack, func(f []byte) { f[1] = 0 }), decAck, codec.ErrBadMagic, "magic", 0},
		{"version 2", mut(bf, func(f []byte) { f[2] = 2 }), decLenient, codec.ErrUnsupportedVersion, "version", 2},
		{"version 0 nack", mut(nack, func(f []byte) { f[2] = 0 }), decNack, codec.ErrUnsupportedVersion, "version", 2},
		{"version 2 header", mut(bf, func(f []byte) { f[2] = 2 }), decHeader, codec.ErrUnsupportedVersion, "version", 2},
		{"type 9 in batch decoder", mut(bf, func(f []byte) { f[3] = 9 }), decLenient, codec.ErrUnknownType, "type", 3},
		{"type 0 in batch decoder", mut(bf, func(f []byte) { f[3] = 0 }), decLenient, codec.ErrUnknownType, "type", 3},
		{"ack in batch decoder", ack, decLenient, codec.ErrUnknownType, "type", 3},
		{"batch in ack decoder", bf, decAck, codec.ErrUnknownType, "type", 3},
		{"batch in nack decoder", bf, decNack, codec.ErrUnknownType, "type", 3},
		{"connect type in nack decoder", mut(nack, func(f []byte) { f[3] = byte(codec.TypeConnect) }), decNack, codec.ErrUnknownType, "type", 3},
		{"unknown operation 3", fixCRC(mut(bf, func(f []byte) { f[tbEntry0+16] = 3 })), decStrict, codec.ErrUnknownOperation, "entries[0].operation", tbEntry0 + 16},
		{"unknown operation 255 entry 1", fixCRC(mut(bf, func(f []byte) { f[tbEntry1+16] = 255 })), decLenient, codec.ErrUnknownOperation, "entries[1].operation", tbEntry1 + 16},
		{"compressed flag", mut(bf, func(f []byte) { f[4] |= byte(codec.FlagCompressed) }), decLenient, codec.ErrCompressed, "flags", 4},
		{"correlation length without flag", mut(bf, func(f []byte) { f[4] &^= byte(codec.FlagHasCorrelation) }), decLenient, codec.ErrInvalidMessage, "correlationIdLength", 34},
		{"batch header truncated", bf[:39], decLenient, codec.ErrTruncated, "batch header", 39},
		{"header truncated", bf[:23], decHeader, codec.ErrTruncated, "header", 23},
		{"empty frame", nil, decLenient, codec.ErrTruncated, "header", 0},
		{"sourceDoId length beyond frame", mut(bf, func(f []byte) { le.PutUint16(f[24:], 0xFFFF) }), decLenient, codec.ErrTruncated, "sourceDoId", 40},
		{"correlation length beyond frame", mut(bf, func(f []byte) { le.PutUint16(f[34:], 0xFFFF) }), decLenient, codec.ErrTruncated, "correlationId", 43},
		{"payload size beyond frame", mut(bf, func(f []byte) { le.PutUint32(f[30:], 0xFFFFFFFF) }), decLenient, codec.ErrTruncated, "payloadSize", 30},
		{"payload size short of frame", mut(bf, func(f []byte) { le.PutUint32(f[30:], le.Uint32(f[30:])-1) }), decLenient, codec.ErrTrailingBytes, "frame", len(bf) - 1},
		{"payload size under 4", mut(bf[:tbEntries+3], func(f []byte) { le.PutUint32(f[30:], 3) }), decLenient, codec.ErrTruncated, "entries", tbEntries},
		{"table length beyond frame", mut(bf, func(f []byte) { le.PutUint16(f[tbEntry0+17:], 0xFFFF) }), decLenient, codec.ErrTruncated, "entries[0].lengths", tbEntry0 + 17},
		{"row id length beyond frame", mut(bf, func(f []byte) { le.PutUint16(f[tbEntry0+19:], 0xFFFF) }), decLenient, codec.ErrTruncated, "entries[0].lengths", tbEntry0 + 17},
		{"before length 2^32-1", mut(bf, func(f []byte) { le.PutUint32(f[tbEntry0+21:], 0xFFFFFFFF) }), decLenient, codec.ErrTruncated, "entries[0].lengths", tbEntry0 + 17},
		// 2^31 + 2^31 wraps to 0 in a 32-bit int (GOARCH=386 go test ./codec).
		{"before and after lengths 2^31", mut(bf, func(f []byte) {
			le.PutUint32(f[tbEntry0+21:], 1<<31)
			le.PutUint32(f[tbEntry0+25:], 1<<31)
		}), decLenient, codec.ErrTruncated, "entries[0].lengths", tbEntry0 + 17},
		{"payload size 2^31", mut(bf, func(f []byte) { le.PutUint32(f[30:], 1<<31) }), decLenient, codec.ErrTruncated, "payloadSize", 30},
		{"all lengths max", mut(bf, func(f []byte) {
			le.PutUint16(f[tbEntry0+17:], 0xFFFF)
			le.PutUint16(f[tbEntry0+19:], 0xFFFF)
			le.PutUint32(f[tbEntry0+21:], 0xFFFFFFFF)
			le.PutUint32(f[tbEntry0+25:], 0xFFFFFFFF)
		}), decLenient, codec.ErrTruncated, "entries[0].lengths", tbEntry0 + 17},
		{"after length one short", mut(bf, func(f []byte) { le.PutUint32(f[tbEntry0+25:], 6) }), decLenient, codec.ErrTruncated, "entries[1].lengths", tbEntry1 + 16},
		{"last entry length past end", mut(bf, func(f []byte) { le.PutUint32(f[tbEntry1+21:], 8) }), decLenient, codec.ErrTruncated, "entries[1].lengths", tbEntry1 + 17},
		{"entry count mismatch", mut(bf, func(f []byte) { le.PutUint32(f[26:], 1) }), decLenient, codec.ErrCountMismatch, "entries.count", tbEntries},
		{"entry count huge", mut(bf, func(f []byte) { le.PutUint32(f[26:], 0xFFFFFFFF); le.PutUint32(f[tbEntries:], 0xFFFFFFFF) }), decLenient, codec.ErrTruncated, "entryCount", 26},
		{"entry count one too many", mut(bf, func(f []byte) { le.PutUint32(f[26:], 3); le.PutUint32(f[tbEntries:], 3) }), decLenient, codec.ErrTruncated, "entryCount", 26},
		{"entry count one too few", mut(bf, func(f []byte) { le.PutUint32(f[26:], 1); le.PutUint32(f[tbEntries:], 1) }), decLenient, codec.ErrTrailingBytes, "entries", tbEntry1},
		{"trailing byte", append(bf[:len(bf):len(bf)], 0), decLenient, codec.ErrTrailingBytes, "frame", len(bf)},
		{"trailing byte inside payload", mut(append(bf[:len(bf):len(bf)], 0), func(f []byte) { le.PutUint32(f[30:], le.Uint32(f[30:])+1) }), decLenient, codec.ErrTrailingBytes, "entries", len(bf)},
		{"trailing byte ack", append(ack[:len(ack):len(ack)], 0), decAck, codec.ErrTrailingBytes, "frame", len(ack)},
		{"trailing byte ack without correlation", append(ackNoCorr[:len(ackNoCorr):len(ackNoCorr)], 0), decAck, codec.ErrTrailingBytes, "frame", 25},
		{"trailing byte nack", append(nack[:len(nack):len(nack)], 0), decNack, codec.ErrTrailingBytes, "frame", len(nack)},
		{"ack correlation length beyond frame", mut(ack, func(f []byte) { le.PutUint16(f[25:], 0xFFFF) }), decAck, codec.ErrTruncated, "correlationId", 27},
		{"ack flag without correlation length", mut(ackNoCorr, func(f []byte) { f[4] = byte(codec.FlagHasCorrelation) }), decAck, codec.ErrTruncated, "correlationIdLength", 25},
		{"nack message length beyond frame", mut(nack, func(f []byte) { le.PutUint16(f[30:], 0xFFFF) }), decNack, codec.ErrTruncated, "errorMessage", 30},
		{"nack correlation length beyond frame", mut(nack, func(f []byte) { le.PutUint16(f[36:], 0xFFFF) }), decNack, codec.ErrTruncated, "correlationId", 38},
		{"nack message invalid UTF-8", mut(nack, func(f []byte) { f[33] = 0xFF }), decNack, codec.ErrInvalidUTF8, "errorMessage", 32},
		{"frame over 16 MiB", huge, decLenient, codec.ErrTooLarge, "frame", 0},
		{"frame over 16 MiB owned", huge, decOwned, codec.ErrTooLarge, "frame", 0},
		{"frame over 16 MiB into", huge, decInto, codec.ErrTooLarge, "frame", 0},
		{"frame over 16 MiB ack", huge, decAck, codec.ErrTooLarge, "frame", 0},
		{"frame over 16 MiB nack", huge, decNack, codec.ErrTooLarge, "frame", 0},
		{"frame over 16 MiB header", huge, decHeader, codec.ErrTooLarge, "frame", 0},
		{"JSON over 16 MiB", huge, decJSON, codec.ErrTooLarge, "message", 0},
		{"strict checksum mismatch", mut(bf, func(f []byte) { f[36] ^= 1 }), decStrict, codec.ErrChecksum, "checksum", 36},
		{"strict checksum payload changed", mut(bf, func(f []byte) { f[tbAfter0+5] = '2' }), decStrict, codec.ErrChecksum, "checksum", 36},
		{"invalid UTF-8 sourceDoId", fixCRC(mut(bf, func(f []byte) { f[41] = 0xC3 })), decStrict, codec.ErrInvalidUTF8, "sourceDoId", 40},
		{"invalid UTF-8 correlationId", fixCRC(mut(bf, func(f []byte) { f[44] = 0x80 })), decStrict, codec.ErrInvalidUTF8, "correlationId", 43},
		{"invalid UTF-8 table", fixCRC(mut(bf, func(f []byte) { f[tbTable0] = 0xFF })), decStrict, codec.ErrInvalidUTF8, "entries[0].table", tbTable0},
		{"invalid UTF-8 row id", fixCRC(mut(bf, func(f []byte) { f[tbTable0+1] = 0xFE })), decStrict, codec.ErrInvalidUTF8, "entries[0].rowId", tbTable0 + 1},
		{"invalid JSON before", fixCRC(mut(bf, func(f []byte) { f[tbBefore0+6] = ']' })), decStrict, codec.ErrInvalidJSON, "entries[0].before", tbBefore0},
		{"invalid JSON after", fixCRC(mut(bf, func(f []byte) { f[tbAfter0] = 'x' })), decStrict, codec.ErrInvalidJSON, "entries[0].after", tbAfter0},
		{"invalid JSON before entry 1", fixCRC(mut(bf, func(f []byte) { f[len(f)-1] = ',' })), decStrict, codec.ErrInvalidJSON, "entries[1].before", len(bf) - 7},
		{"JSON non-object", []byte(`[1,2]`), decJSON, codec.ErrInvalidMessage, "", anyOff},
		{"JSON string", []byte(`"connect"`), decJSON, codec.ErrInvalidMessage, "", anyOff},
		{"JSON number", []byte(`42`), decJSON, codec.ErrInvalidMessage, "", anyOff},
		{"JSON null", []byte(`null`), decJSON, codec.ErrInvalidMessage, "type", 0},
		{"JSON missing type", []byte(`{"timestamp":1}`), decJSON, codec.ErrInvalidMessage, "type", 0},
		{"JSON null type", []byte(`{"type":null}`), decJSON, codec.ErrInvalidMessage, "type", 0},
		{"JSON numeric type", []byte(`{"type":1}`), decJSON, codec.ErrInvalidMessage, "type", anyOff},
		{"JSON unknown type", []byte(`{"type":"hello"}`), decJSON, codec.ErrUnknownType, "type", 0},
		{"JSON status is parent-to-child", []byte(`{"type":"status","timestamp":1}`), decJSON, codec.ErrUnknownType, "type", 0},
		{"JSON invalid", []byte(`{"type":"connect",`), decJSON, codec.ErrInvalidJSON, "message", anyOff},
		{"JSON empty", []byte(``), decJSON, codec.ErrInvalidJSON, "message", anyOff},
		{"JSON trailing garbage", []byte(`{"type":"connect"} x`), decJSON, codec.ErrInvalidJSON, "message", anyOff},
		{"JSON invalid UTF-8", []byte("{\"type\":\"connect\",\"sourceDoId\":\"\xff\"}"), decJSON, codec.ErrInvalidUTF8, "message", 0},
		{"JSON wrong field type", []byte(`{"type":"heartbeat","timestamp":"now"}`), decJSON, codec.ErrInvalidMessage, "timestamp", anyOff},
		{"JSON negative sequence", []byte(`{"type":"cdc_batch","sequenceNumber":-1}`), decJSON, codec.ErrInvalidMessage, "sequenceNumber", anyOff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.frame)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var de *codec.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%v (%T) is not a *DecodeError", err, err)
			}
			if !strings.Contains(de.Field, tc.field) {
				t.Errorf("Field = %q, want it to contain %q", de.Field, tc.field)
			}
			if tc.offset != anyOff && de.Offset != tc.offset {
				t.Errorf("Offset = %d, want %d (%v)", de.Offset, tc.offset, err)
			}
			if de.Offset < 0 || de.Offset > len(tc.frame) {
				t.Errorf("Offset %d outside the frame of %d bytes", de.Offset, len(tc.frame))
			}
			if msg := err.Error(); !strings.Contains(msg, de.Field) || !strings.Contains(msg, tc.want.Error()) {
				t.Errorf("Error() = %q lacks the field or the sentinel", msg)
			}
		})
	}
}

// TestDecodeTruncatedPrefixes decodes every proper prefix of every vector and
// of a W1 frame: each must fail with ErrTruncated, never panic.
func TestDecodeTruncatedPrefixes(t *testing.T) {
	type frame struct {
		name, kind string
		data       []byte
	}
	var frames []frame
	for _, c := range loadVectors(t) {
		frames = append(frames, frame{c.Name, c.Kind, c.data})
	}
	w1 := w1Frame(t)
	frames = append(frames, frame{"w1", "cdc_batch", w1})
	frames = append(frames, frame{"testBatch", "cdc_batch", testBatchFrame(t)})
	decoders := map[string][]decodeFunc{
		"cdc_batch": {decLenient, decStrict, decOwned, decInto},
		"ack":       {decAck},
		"nack":      {decNack},
	}
	check := func(t *testing.T, name string, n int, err error) {
		t.Helper()
		if !errors.Is(err, codec.ErrTruncated) {
			t.Fatalf("%s[:%d]: got %v, want ErrTruncated", name, n, err)
		}
		var de *codec.DecodeError
		if !errors.As(err, &de) || de.Offset < 0 || de.Offset > n || de.Field == "" {
			t.Fatalf("%s[:%d]: %v: want a *DecodeError with a field and an offset within the prefix", name, n, err)
		}
	}
	for _, f := range frames {
		decs := decoders[f.kind]
		for n := 0; n < len(f.data); n++ {
			// Every prefix of the 210 kB W1 frame would be slow: sample them.
			if f.name == "w1" && n > 4096 && n%997 != 0 && n < len(f.data)-64 {
				continue
			}
			p := f.data[:n:n]
			for _, d := range decs {
				check(t, f.name, n, d(p))
			}
			if n < codec.HeaderSize {
				check(t, f.name+" header", n, decHeader(p))
			}
		}
	}
}

// TestDecodeHugeCountDoesNotAllocate: a frame that declares 2^32-1 entries
// fails before allocating anything for them.
func TestDecodeHugeCountDoesNotAllocate(t *testing.T) {
	f := mut(testBatchFrame(t), func(f []byte) {
		le.PutUint32(f[26:], 0xFFFFFFFF)
		le.PutUint32(f[tbEntries:], 0xFFFFFFFF)
	})
	var b codec.Batch
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	allocs := testing.AllocsPerRun(100, func() {
		if err := codec.DecodeBatchInto(&b, f, codec.DecodeOptions{}); !isErr(err, codec.ErrTruncated) {
			t.Fatalf("got %v, want ErrTruncated", err)
		}
	})
	runtime.ReadMemStats(&ms1)
	if allocs > 8 {
		t.Errorf("%v allocations per failed decode", allocs)
	}
	// 101 runs; anything near 2^32 entries (116 GiB) or even one MiB each would show.
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 101*4096 {
		t.Errorf("failed decodes allocated %d bytes", d)
	}
	if cap(b.Entries) != 0 {
		t.Errorf("entries allocated: cap %d", cap(b.Entries))
	}
}

// TestEncodeErrors covers the encoders' limits.
func TestEncodeErrors(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 0x10000)
	big := make([]byte, codec.MaxMessageSize)
	withEntry := func(e codec.Entry) *codec.Batch {
		b := testBatch()
		b.Entries = append(b.Entries, e)
		return b
	}
	tests := []struct {
		name string
		enc  func(dst []byte) ([]byte, error)
		want error
	}{
		{"batch unknown op", func(d []byte) ([]byte, error) { return codec.AppendBatch(d, withEntry(codec.Entry{Op: 3})) }, codec.ErrUnknownOperation},
		{"batch table too long", func(d []byte) ([]byte, error) { return codec.AppendBatch(d, withEntry(codec.Entry{Table: long})) }, codec.ErrFieldTooLong},
		{"batch row id too long", func(d []byte) ([]byte, error) { return codec.AppendBatch(d, withEntry(codec.Entry{RowID: long})) }, codec.ErrFieldTooLong},
		{"batch source too long", func(d []byte) ([]byte, error) {
			b := testBatch()
			b.SourceID = long
			return codec.AppendBatch(d, b)
		}, codec.ErrFieldTooLong},
		{"batch correlation too long", func(d []byte) ([]byte, error) {
			b := testBatch()
			b.CorrelationID = long
			return codec.AppendBatch(d, b)
		}, codec.ErrFieldTooLong},
		{"batch over 16 MiB", func(d []byte) ([]byte, error) { return codec.AppendBatch(d, withEntry(codec.Entry{After: big})) }, codec.ErrTooLarge},
		{"ack correlation too long", func(d []byte) ([]byte, error) { return codec.AppendAck(d, &codec.Ack{CorrelationID: long}) }, codec.ErrFieldTooLong},
		{"nack message too long", func(d []byte) ([]byte, error) { return codec.AppendNack(d, &codec.Nack{Message: string(long)}) }, codec.ErrFieldTooLong},
		{"nack correlation too long", func(d []byte) ([]byte, error) { return codec.AppendNack(d, &codec.Nack{CorrelationID: long}) }, codec.ErrFieldTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := tc.enc(dst)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if string(out) != "keep" {
				t.Errorf("dst after a failed encode = %q, want it unchanged", out)
			}
		})
	}
	// The largest frame that fits is accepted, and decodes.
	b := testBatch()
	b.Entries = b.Entries[:1]
	b.Entries[0].After = nil
	b.Entries[0].After = make([]byte, codec.MaxMessageSize-b.EncodedSize())
	f, err := codec.EncodeBatch(b)
	if err != nil || len(f) != codec.MaxMessageSize {
		t.Fatalf("16 MiB frame: %d bytes, %v", len(f), err)
	}
	if _, err := codec.DecodeBatch(f, codec.DecodeOptions{StrictChecksum: true}); err != nil {
		t.Fatalf("decode of a 16 MiB frame: %v", err)
	}
}
