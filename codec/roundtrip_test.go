package codec_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"github.com/dot-do/lakehouse-rpc/codec"
)

var runes = []rune("aZ09-_ {}\":,.\\\x00\x7féüß€表分片😀🦆\u2028\uFFFD")

// randBytes returns n random bytes: printable, unicode or (sometimes) any
// bytes at all; the codec carries all of them unchanged.
func randBytes(r *rand.Rand, maxLen int) []byte {
	n := r.IntN(maxLen + 1)
	if r.IntN(4) == 0 {
		n = 0
	}
	b := make([]byte, 0, n)
	switch r.IntN(3) {
	case 0: // raw bytes, possibly invalid UTF-8
		for range n {
			b = append(b, byte(r.UintN(256)))
		}
	default:
		for len(b) < n {
			b = utf8.AppendRune(b, runes[r.IntN(len(runes))])
		}
	}
	return b
}

// randOpt is nil or non-empty: an empty before/after/correlation id is
// "absent" on the wire.
func randOpt(r *rand.Rand, maxLen int) []byte {
	if r.IntN(3) == 0 {
		return nil
	}
	b := randBytes(r, maxLen)
	if len(b) == 0 {
		b = []byte("{}")
	}
	return b
}

func randUint64(r *rand.Rand) uint64 {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return ^uint64(0) - r.Uint64N(3)
	case 2:
		return 1<<53 - 1
	}
	return r.Uint64()
}

func randBatch(r *rand.Rand) *codec.Batch {
	b := &codec.Batch{
		Timestamp:     randUint64(r),
		Sequence:      randUint64(r),
		Retry:         r.IntN(2) == 0,
		SourceID:      randBytes(r, 40),
		CorrelationID: randOpt(r, 40),
	}
	n := r.IntN(20)
	if r.IntN(20) == 0 {
		n = 200 + r.IntN(300)
	}
	if n > 0 || r.IntN(2) == 0 {
		b.Entries = make([]codec.Entry, n)
	}
	for i := range b.Entries {
		b.Entries[i] = codec.Entry{
			Sequence:  randUint64(r),
			Timestamp: randUint64(r),
			Op:        codec.Op(r.IntN(3)),
			Table:     randBytes(r, 20),
			RowID:     randBytes(r, 30),
			Before:    randOpt(r, 300),
			After:     randOpt(r, 300),
		}
	}
	return b
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	var reused codec.Batch // DecodeBatchInto across frames of all sizes
	dst := []byte("some earlier frame")
	for it := range iters {
		b := randBatch(r)
		frame, err := codec.EncodeBatch(b)
		if err != nil {
			t.Fatalf("#%d: EncodeBatch: %v", it, err)
		}
		if len(frame) != b.EncodedSize() {
			t.Fatalf("#%d: frame %d bytes, EncodedSize %d", it, len(frame), b.EncodedSize())
		}
		d, err := codec.DecodeBatch(frame, codec.DecodeOptions{StrictChecksum: true})
		if err != nil {
			t.Fatalf("#%d: DecodeBatch: %v", it, err)
		}
		if diff := batchDiff(b, d); diff != "" {
			t.Fatalf("#%d: decode(encode(x)) != x:\n%s", it, diff)
		}
		if !d.ChecksumOK || d.Checksum != le.Uint32(frame[36:]) {
			t.Fatalf("#%d: ChecksumOK %v Checksum 0x%08x", it, d.ChecksumOK, d.Checksum)
		}
		if want := len(frame) - 40 - len(b.SourceID) - len(b.CorrelationID); int(d.PayloadSize) != want {
			t.Fatalf("#%d: PayloadSize %d, want %d", it, d.PayloadSize, want)
		}
		if h, _ := codec.ReadHeader(frame); h.Flags&codec.FlagHasCorrelation != 0 != (b.CorrelationID != nil) || h.Flags&codec.FlagIsRetry != 0 != b.Retry {
			t.Fatalf("#%d: flags 0x%02x", it, h.Flags)
		}

		// Decoding into a reused batch gives the same.
		if err := codec.DecodeBatchInto(&reused, frame, codec.DecodeOptions{}); err != nil {
			t.Fatalf("#%d: DecodeBatchInto: %v", it, err)
		}
		if diff := batchDiff(b, &reused); diff != "" {
			t.Fatalf("#%d: DecodeBatchInto into a used batch:\n%s", it, diff)
		}

		// Owned decode and Clone survive the frame being overwritten.
		owned, err := codec.DecodeBatchOwned(frame, codec.DecodeOptions{StrictChecksum: true})
		if err != nil {
			t.Fatalf("#%d: DecodeBatchOwned: %v", it, err)
		}
		clone := d.Clone()
		if clone.PayloadSize != d.PayloadSize || clone.Checksum != d.Checksum || clone.ChecksumOK != d.ChecksumOK {
			t.Fatalf("#%d: Clone lost decode fields", it)
		}
		saved := bytes.Clone(frame)
		copy(frame, bytes.Repeat([]byte{0xA5}, len(frame))) // not a byte loop: those are slow under -race
		for what, got := range map[string]*codec.Batch{"DecodeBatchOwned": owned, "Clone": clone} {
			if diff := batchDiff(b, got); diff != "" {
				t.Fatalf("#%d: %s after the frame changed:\n%s", it, what, diff)
			}
		}
		copy(frame, saved)

		// AppendBatch into a non-empty dst keeps the prefix and appends the frame.
		prefix := append([]byte(nil), dst...)
		dst, err = codec.AppendBatch(dst, b)
		if err != nil {
			t.Fatalf("#%d: AppendBatch: %v", it, err)
		}
		if !bytes.Equal(dst[:len(prefix)], prefix) || !bytes.Equal(dst[len(prefix):], frame) {
			t.Fatalf("#%d: AppendBatch into a %d-byte dst differs from EncodeBatch", it, len(prefix))
		}
		if len(dst) > 64<<10 {
			dst = dst[:r.IntN(64)]
		}
	}
}

func TestAckNackRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for it := range 2000 {
		a := &codec.Ack{Timestamp: randUint64(r), Sequence: randUint64(r), Status: codec.AckStatus(r.IntN(6)),
			CorrelationID: randOpt(r, 50)}
		f, err := codec.AppendAck(nil, a)
		if err != nil {
			t.Fatal(err)
		}
		if want := 25 + len(a.CorrelationID) + 2*btoi(a.CorrelationID != nil); len(f) != want {
			t.Fatalf("#%d: ack is %d bytes, want %d", it, len(f), want)
		}
		ga, err := codec.DecodeAck(f)
		if err != nil {
			t.Fatalf("#%d: DecodeAck: %v", it, err)
		}
		if ga.Timestamp != a.Timestamp || ga.Sequence != a.Sequence || ga.Status != a.Status || !optEqual(ga.CorrelationID, a.CorrelationID) {
			t.Fatalf("#%d: ack %+v != %+v", it, ga, a)
		}

		n := &codec.Nack{Timestamp: randUint64(r), Sequence: randUint64(r), Reason: codec.NackReason(r.IntN(7)),
			ShouldRetry: r.IntN(2) == 0, RetryDelayMs: r.Uint32(), Message: string(randUTF8(r, 80)),
			CorrelationID: randOpt(r, 50)}
		f, err = codec.AppendNack([]byte("x"), n)
		if err != nil {
			t.Fatal(err)
		}
		gn, err := codec.DecodeNack(f[1:])
		if err != nil {
			t.Fatalf("#%d: DecodeNack: %v", it, err)
		}
		if gn.Timestamp != n.Timestamp || gn.Sequence != n.Sequence || gn.Reason != n.Reason || gn.ShouldRetry != n.ShouldRetry ||
			gn.RetryDelayMs != n.RetryDelayMs || gn.Message != n.Message || !optEqual(gn.CorrelationID, n.CorrelationID) {
			t.Fatalf("#%d: nack %+v != %+v", it, gn, n)
		}
	}
}

func randUTF8(r *rand.Rand, maxLen int) []byte {
	b := randBytes(r, maxLen)
	if !utf8.Valid(b) {
		return bytes.ToValidUTF8(b, []byte("?"))
	}
	return b
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDecodeBatchIntoW1NoAllocs: decoding W1 frames into a reused Batch
// allocates nothing once the batch has room for the entries.
func TestDecodeBatchIntoW1NoAllocs(t *testing.T) {
	frame := w1Frame(t)
	var b codec.Batch
	for _, opts := range []codec.DecodeOptions{{}, {SkipChecksum: true}, {StrictChecksum: true, ValidateUTF8: true}} {
		if err := codec.DecodeBatchInto(&b, frame, opts); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(20, func() {
			if err := codec.DecodeBatchInto(&b, frame, opts); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("DecodeBatchInto(%+v) allocates %v times per call on reuse", opts, allocs)
		}
	}
	if len(b.Entries) != 1000 || string(b.Entries[999].RowID) != "row-999" {
		t.Fatalf("decoded W1: %d entries", len(b.Entries))
	}
	// Encoding into a buffer with room allocates nothing either.
	w := decodedW1(t)
	buf := make([]byte, 0, len(frame))
	if allocs := testing.AllocsPerRun(20, func() { buf, _ = codec.AppendBatch(buf[:0], w) }); allocs != 0 {
		t.Errorf("AppendBatch into a large enough buffer allocates %v times", allocs)
	}
}
