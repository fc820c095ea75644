package server

import (
	"fmt"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// frameTooLarge reports a structured batch whose frame would exceed the
// protocol's maximum.
type frameTooLarge struct{ size int }

func (e *frameTooLarge) Error() string {
	return fmt.Sprintf("batch frame of %d bytes is too large", e.size)
}

// encodeStructured turns a structured batch into a codec frame, so both kinds
// of batch take one path (and the write-ahead log holds one format). It checks
// the row images' JSON itself when validateJSON is set, so that the error
// names the field as the client sent it rather than an offset in a frame the
// client never saw.
func encodeStructured(b *lakehousev1.Batch, sourceID string, validateJSON bool) ([]byte, error) {
	cb := codec.Batch{
		Timestamp:     uint64(b.GetTimestampMs()),
		Sequence:      b.GetSequenceNumber(),
		Retry:         b.GetIsRetry(),
		SourceID:      []byte(b.GetSourceId()),
		CorrelationID: []byte(b.GetCorrelationId()),
		Entries:       make([]codec.Entry, len(b.GetEntries())),
	}
	if len(cb.SourceID) == 0 {
		cb.SourceID = []byte(sourceID)
	}
	for i, e := range b.GetEntries() {
		op, ok := protomap.Op(e.GetOperation())
		if !ok {
			return nil, fmt.Errorf("entries[%d].operation %v is not INSERT, UPDATE or DELETE", i, e.GetOperation())
		}
		cb.Entries[i] = codec.Entry{
			Sequence:  e.GetSequence(),
			Timestamp: uint64(e.GetTimestampMs()),
			Op:        op,
			Table:     []byte(e.GetTable()),
			RowID:     []byte(e.GetRowId()),
		}
		if e.GetBefore() != "" {
			cb.Entries[i].Before = []byte(e.GetBefore())
			if validateJSON && !codec.ValidJSON(cb.Entries[i].Before) {
				return nil, fmt.Errorf("entries[%d].before is not valid JSON text", i)
			}
		}
		if e.GetAfter() != "" {
			cb.Entries[i].After = []byte(e.GetAfter())
			if validateJSON && !codec.ValidJSON(cb.Entries[i].After) {
				return nil, fmt.Errorf("entries[%d].after is not valid JSON text", i)
			}
		}
	}
	if size := cb.EncodedSize(); size > codec.MaxMessageSize {
		return nil, &frameTooLarge{size: size}
	}
	return codec.EncodeBatch(&cb)
}
