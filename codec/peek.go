package codec

import (
	"fmt"
	"unicode/utf8"
)

// BatchHeader is what the first bytes of a cdc_batch frame say, read without
// decoding (or even having) the entries: enough to answer a frame that is
// refused (too large, undecodable) with its own ids, and to size a frame
// whose header has arrived.
type BatchHeader struct {
	Header
	SourceIDLength      int
	EntryCount          uint32
	PayloadSize         uint32 // P, the declared size of the entries block
	CorrelationIDLength int    // 0 without the HAS_CORRELATION_ID flag
	Checksum            uint32
	// SourceID and CorrelationID are set when they are present in full and
	// valid UTF-8, nil otherwise.
	SourceID      []byte
	CorrelationID []byte
}

// DeclaredSize is the frame size the header declares.
func (h *BatchHeader) DeclaredSize() int64 {
	return batchFixedSize + int64(h.SourceIDLength) + int64(h.CorrelationIDLength) + int64(h.PayloadSize)
}

// PeekBatchHeader reads the header of a cdc_batch frame that may be cut
// short, oversized or invalid beyond its first 40 bytes. Unlike DecodeBatch
// it checks neither the frame's size nor its entries. It fails when the
// first 40 bytes are not a cdc_batch header; the returned header then holds
// the common header if that much was readable (Sequence, for a nack).
func PeekBatchHeader(frame []byte) (BatchHeader, error) {
	var h BatchHeader
	if len(frame) < HeaderSize {
		return h, decodeErr(len(frame), "header", ErrTruncated, fmt.Sprintf("%d of %d bytes", len(frame), HeaderSize))
	}
	if m := le.Uint16(frame); m != Magic {
		return h, decodeErr(0, "magic", ErrBadMagic, fmt.Sprintf("0x%04x, expected 0x%04x", m, Magic))
	}
	h.Header = Header{
		Type:      MessageType(frame[3]),
		Flags:     Flags(frame[4]),
		Timestamp: le.Uint64(frame[8:]),
		Sequence:  le.Uint64(frame[16:]),
	}
	if h.Type != TypeCDCBatch {
		return h, decodeErr(3, "type", ErrUnknownType, fmt.Sprintf("%s, expected cdc_batch", h.Type))
	}
	if len(frame) < batchFixedSize {
		return h, decodeErr(len(frame), "batch header", ErrTruncated, fmt.Sprintf("%d of %d bytes", len(frame), batchFixedSize))
	}
	h.SourceIDLength = int(le.Uint16(frame[24:]))
	h.EntryCount = le.Uint32(frame[26:])
	h.PayloadSize = le.Uint32(frame[30:])
	if h.Flags&FlagHasCorrelation != 0 {
		h.CorrelationIDLength = int(le.Uint16(frame[34:]))
	}
	h.Checksum = le.Uint32(frame[36:])
	off := batchFixedSize
	if end := off + h.SourceIDLength; end <= len(frame) && utf8.Valid(frame[off:end]) {
		h.SourceID = frame[off:end:end]
	}
	off += h.SourceIDLength
	if end := off + h.CorrelationIDLength; h.CorrelationIDLength > 0 && end <= len(frame) && utf8.Valid(frame[off:end]) {
		h.CorrelationID = frame[off:end:end]
	}
	return h, nil
}
