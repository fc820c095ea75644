package codec

import (
	"errors"
	"testing"
)

func TestPeekBatchHeader(t *testing.T) {
	b := &Batch{Timestamp: 1700000000000, Sequence: 42, SourceID: []byte("src-1"), CorrelationID: []byte("corr-9"),
		Entries: []Entry{{Sequence: 1, Timestamp: 1, Table: []byte("t"), RowID: []byte("r"), After: []byte("{}")}}}
	frame, err := EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	h, err := PeekBatchHeader(frame)
	if err != nil {
		t.Fatal(err)
	}
	if h.Sequence != 42 || h.Timestamp != 1700000000000 || string(h.SourceID) != "src-1" || string(h.CorrelationID) != "corr-9" ||
		h.EntryCount != 1 || h.DeclaredSize() != int64(len(frame)) {
		t.Fatalf("header %+v", h)
	}
	// Every prefix: no panic; the ids appear once their bytes are in.
	for n := range len(frame) {
		h, err := PeekBatchHeader(frame[:n])
		switch {
		case n < HeaderSize:
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%d bytes: %v", n, err)
			}
		case n < batchFixedSize:
			if !errors.Is(err, ErrTruncated) || h.Sequence != 42 {
				t.Fatalf("%d bytes: %v, sequence %d", n, err, h.Sequence)
			}
		default:
			if err != nil || h.DeclaredSize() != int64(len(frame)) {
				t.Fatalf("%d bytes: %v, declared %d", n, err, h.DeclaredSize())
			}
			if (h.SourceID != nil) != (n >= batchFixedSize+5) || (h.CorrelationID != nil) != (n >= batchFixedSize+11) {
				t.Fatalf("%d bytes: ids %q %q", n, h.SourceID, h.CorrelationID)
			}
		}
	}
	// An oversized frame is still peeked (to nack it with its ids).
	big := append(append([]byte(nil), frame...), make([]byte, MaxMessageSize)...)
	if h, err := PeekBatchHeader(big); err != nil || string(h.CorrelationID) != "corr-9" {
		t.Fatalf("oversized frame: %v %q", err, h.CorrelationID)
	}
	// Invalid UTF-8 in the correlation id: not returned.
	bad := append([]byte(nil), frame...)
	bad[batchFixedSize+5] = 0xff
	if h, err := PeekBatchHeader(bad); err != nil || h.CorrelationID != nil {
		t.Fatalf("invalid UTF-8 correlation id: %v %q", err, h.CorrelationID)
	}
	ack, _ := AppendAck(nil, &Ack{Sequence: 3})
	if _, err := PeekBatchHeader(ack); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("ack frame: %v", err)
	}
}
