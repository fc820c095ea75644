package codec

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf8"
)

var le = binary.LittleEndian

// Header is the common 24-byte header of every binary frame.
type Header struct {
	Type      MessageType
	Flags     Flags
	Timestamp uint64 // ms since the Unix epoch
	Sequence  uint64 // batch sequence number (of the acknowledged batch for ack/nack)
}

// IsBinary reports whether data starts with the binary magic. A frame that
// does not is JSON text (legacy-protocol.md, "Who sends what").
func IsBinary(data []byte) bool {
	return len(data) >= 2 && le.Uint16(data) == Magic
}

// ReadHeader validates and returns the common header of a binary frame.
func ReadHeader(frame []byte) (Header, error) {
	if len(frame) > MaxMessageSize {
		return Header{}, decodeErr(0, "frame", ErrTooLarge, fmt.Sprintf("%d bytes", len(frame)))
	}
	if len(frame) < HeaderSize {
		return Header{}, decodeErr(len(frame), "header", ErrTruncated, fmt.Sprintf("%d of %d bytes", len(frame), HeaderSize))
	}
	if m := le.Uint16(frame); m != Magic {
		return Header{}, decodeErr(0, "magic", ErrBadMagic, fmt.Sprintf("0x%04x, expected 0x%04x", m, Magic))
	}
	if v := frame[2]; v != Version {
		return Header{}, decodeErr(2, "version", ErrUnsupportedVersion, fmt.Sprintf("version %d, expected %d", v, Version))
	}
	return Header{
		Type:      MessageType(frame[3]),
		Flags:     Flags(frame[4]),
		Timestamp: le.Uint64(frame[8:]),
		Sequence:  le.Uint64(frame[16:]),
	}, nil
}

func putHeader(b []byte, t MessageType, f Flags, ts, seq uint64) {
	le.PutUint16(b, Magic)
	b[2] = Version
	b[3] = byte(t)
	b[4] = byte(f)
	b[5], b[6], b[7] = 0, 0, 0
	le.PutUint64(b[8:], ts)
	le.PutUint64(b[16:], seq)
}

// Entry is one CDC entry. In a decoded batch, the byte slices point into the
// frame (zero-copy); Before and After are nil when absent.
type Entry struct {
	Sequence  uint64 // the child's WAL position, increasing within a source
	Timestamp uint64 // ms since the Unix epoch
	Op        Op
	Table     []byte
	RowID     []byte
	Before    []byte // JSON text exactly as sent, nil when absent
	After     []byte // JSON text exactly as sent, nil when absent
}

// EncodedSize is the number of bytes the entry takes in a cdc_batch frame.
func (e *Entry) EncodedSize() int {
	return entryFixedSize + len(e.Table) + len(e.RowID) + len(e.Before) + len(e.After)
}

// Batch is a cdc_batch message.
type Batch struct {
	Timestamp     uint64 // ms since the Unix epoch
	Sequence      uint64 // the batch's sequence number
	Retry         bool   // the IS_RETRY flag
	SourceID      []byte // the sourceDoId
	CorrelationID []byte // nil when absent
	Entries       []Entry

	// Filled in by decoding; ignored by encoding.
	PayloadSize uint32 // P, the size of the entries block (the legacy sizeBytes)
	Checksum    uint32 // the checksum field as read
	ChecksumOK  bool   // whether Checksum is the CRC-32 of the frame with the field zeroed
}

// FirstEntrySequence returns the first entry's sequence, 0 for an empty batch.
func (b *Batch) FirstEntrySequence() uint64 {
	if len(b.Entries) == 0 {
		return 0
	}
	return b.Entries[0].Sequence
}

// LastEntrySequence returns the last entry's sequence, 0 for an empty batch.
func (b *Batch) LastEntrySequence() uint64 {
	if len(b.Entries) == 0 {
		return 0
	}
	return b.Entries[len(b.Entries)-1].Sequence
}

// EncodedSize is the size of the batch's cdc_batch frame.
func (b *Batch) EncodedSize() int {
	n := batchFixedSize + len(b.SourceID) + len(b.CorrelationID) + 4
	for i := range b.Entries {
		n += b.Entries[i].EncodedSize()
	}
	return n
}

// DecodeOptions control how strictly frames are checked. The zero value is the
// default: lenient checksum, no UTF-8 or JSON validation.
type DecodeOptions struct {
	// StrictChecksum makes a checksum mismatch an error (ErrChecksum).
	StrictChecksum bool
	// SkipChecksum skips computing the checksum; ChecksumOK is then false.
	SkipChecksum bool
	// ValidateUTF8 checks that source id, correlation id, table names and row
	// ids are valid UTF-8 (ErrInvalidUTF8).
	ValidateUTF8 bool
	// ValidateJSON checks that before and after are valid JSON (ErrInvalidJSON),
	// with ValidJSON: the answers of encoding/json.Valid, about 3 times faster.
	ValidateJSON bool
}

// DecodeBatch decodes a cdc_batch frame. The returned batch references frame.
func DecodeBatch(frame []byte, opts DecodeOptions) (*Batch, error) {
	b := new(Batch)
	if err := DecodeBatchInto(b, frame, opts); err != nil {
		return nil, err
	}
	return b, nil
}

// DecodeBatchOwned decodes a copy of frame, so the caller may reuse frame.
func DecodeBatchOwned(frame []byte, opts DecodeOptions) (*Batch, error) {
	if len(frame) > MaxMessageSize {
		return nil, decodeErr(0, "frame", ErrTooLarge, fmt.Sprintf("%d bytes", len(frame)))
	}
	return DecodeBatch(append([]byte(nil), frame...), opts)
}

// DecodeBatchInto decodes a cdc_batch frame into b, reusing b.Entries'
// capacity: decoding frames of a steady size allocates nothing. The batch
// references frame. On error b is left in an unspecified state.
func DecodeBatchInto(b *Batch, frame []byte, opts DecodeOptions) error {
	h, err := ReadHeader(frame)
	if err != nil {
		return err
	}
	if h.Type != TypeCDCBatch {
		return decodeErr(3, "type", ErrUnknownType, fmt.Sprintf("%s, expected cdc_batch", h.Type))
	}
	if h.Flags&FlagCompressed != 0 {
		return decodeErr(4, "flags", ErrCompressed, "")
	}
	if len(frame) < batchFixedSize {
		return decodeErr(len(frame), "batch header", ErrTruncated, fmt.Sprintf("%d of %d bytes", len(frame), batchFixedSize))
	}
	srcLen := int(le.Uint16(frame[24:]))
	count := le.Uint32(frame[26:])
	payload := le.Uint32(frame[30:]) // kept unsigned: int(uint32) is negative on 32-bit platforms
	corrLen := int(le.Uint16(frame[34:]))
	b.Checksum = le.Uint32(frame[36:])
	hasCorr := h.Flags&FlagHasCorrelation != 0
	if !hasCorr && corrLen != 0 {
		return decodeErr(34, "correlationIdLength", ErrInvalidMessage, fmt.Sprintf("%d without the HAS_CORRELATION_ID flag", corrLen))
	}
	off := batchFixedSize
	if srcLen > len(frame)-off {
		return decodeErr(off, "sourceDoId", ErrTruncated, fmt.Sprintf("length %d, %d bytes left", srcLen, len(frame)-off))
	}
	b.SourceID = frame[off : off+srcLen : off+srcLen]
	off += srcLen
	b.CorrelationID = nil
	if hasCorr {
		if corrLen > len(frame)-off {
			return decodeErr(off, "correlationId", ErrTruncated, fmt.Sprintf("length %d, %d bytes left", corrLen, len(frame)-off))
		}
		b.CorrelationID = frame[off : off+corrLen : off+corrLen]
		off += corrLen
	}
	if opts.ValidateUTF8 {
		if !utf8.Valid(b.SourceID) {
			return decodeErr(batchFixedSize, "sourceDoId", ErrInvalidUTF8, "")
		}
		if !utf8.Valid(b.CorrelationID) {
			return decodeErr(batchFixedSize+srcLen, "correlationId", ErrInvalidUTF8, "")
		}
	}
	if rest := len(frame) - off; uint64(payload) != uint64(rest) {
		if uint64(payload) > uint64(rest) {
			return decodeErr(30, "payloadSize", ErrTruncated, fmt.Sprintf("payload size %d, %d bytes present", payload, rest))
		}
		return decodeErr(off+int(payload), "frame", ErrTrailingBytes, fmt.Sprintf("%d bytes after the entries block", rest-int(payload)))
	}
	if payload < 4 {
		return decodeErr(off, "entries", ErrTruncated, "entries block shorter than its count")
	}
	if c := le.Uint32(frame[off:]); c != count {
		return decodeErr(off, "entries.count", ErrCountMismatch, fmt.Sprintf("block says %d, header says %d", c, count))
	}
	off += 4
	// Every entry takes at least entryFixedSize bytes: bound the allocation by
	// the bytes present, never by the declared count alone.
	if uint64(count)*entryFixedSize > uint64(len(frame)-off) {
		return decodeErr(26, "entryCount", ErrTruncated, fmt.Sprintf("%d entries cannot fit in %d bytes", count, len(frame)-off))
	}
	b.Timestamp = h.Timestamp
	b.Sequence = h.Sequence
	b.Retry = h.Flags&FlagIsRetry != 0
	b.PayloadSize = payload
	if cap(b.Entries) >= int(count) {
		b.Entries = b.Entries[:count]
	} else {
		b.Entries = make([]Entry, count)
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		if len(frame)-off < entryFixedSize {
			return decodeErr(off, entryField(i, "header"), ErrTruncated, "")
		}
		p := frame[off : off+entryFixedSize : off+entryFixedSize]
		e.Sequence = le.Uint64(p)
		e.Timestamp = le.Uint64(p[8:])
		op := p[16]
		if op > byte(OpDelete) {
			return decodeErr(off+16, entryField(i, "operation"), ErrUnknownOperation, fmt.Sprintf("code %d", op))
		}
		e.Op = Op(op)
		tl := int(le.Uint16(p[17:]))
		rl := int(le.Uint16(p[19:]))
		bl32 := le.Uint32(p[21:])
		al32 := le.Uint32(p[25:])
		off += entryFixedSize
		// Sum in uint64: on 32-bit platforms int(uint32) can be negative.
		if need := uint64(tl) + uint64(rl) + uint64(bl32) + uint64(al32); need > uint64(len(frame)-off) {
			return decodeErr(off-entryFixedSize+17, entryField(i, "lengths"), ErrTruncated,
				fmt.Sprintf("fields need %d bytes, %d left", need, len(frame)-off))
		}
		bl, al := int(bl32), int(al32) // both fit in the frame now
		e.Table = frame[off : off+tl : off+tl]
		off += tl
		e.RowID = frame[off : off+rl : off+rl]
		off += rl
		e.Before = nil
		if bl > 0 {
			e.Before = frame[off : off+bl : off+bl]
			off += bl
		}
		e.After = nil
		if al > 0 {
			e.After = frame[off : off+al : off+al]
			off += al
		}
		if opts.ValidateUTF8 || opts.ValidateJSON {
			if err := validateEntry(e, i, off, opts); err != nil {
				return err
			}
		}
	}
	if off != len(frame) {
		return decodeErr(off, "entries", ErrTrailingBytes, fmt.Sprintf("%d bytes after entry %d", len(frame)-off, count))
	}
	if !opts.SkipChecksum {
		b.ChecksumOK = batchChecksum(frame) == b.Checksum
		if opts.StrictChecksum && !b.ChecksumOK {
			return decodeErr(36, "checksum", ErrChecksum, fmt.Sprintf("field 0x%08x, computed 0x%08x", b.Checksum, batchChecksum(frame)))
		}
	} else {
		b.ChecksumOK = false
	}
	return nil
}

// validateEntry checks an entry's strings and JSON; end is the offset just
// after the entry, used only for error positions.
func validateEntry(e *Entry, i, end int, opts DecodeOptions) error {
	start := end - len(e.After) - len(e.Before) - len(e.RowID) - len(e.Table)
	if opts.ValidateUTF8 {
		if !utf8.Valid(e.Table) {
			return decodeErr(start, entryField(i, "table"), ErrInvalidUTF8, "")
		}
		if !utf8.Valid(e.RowID) {
			return decodeErr(start+len(e.Table), entryField(i, "rowId"), ErrInvalidUTF8, "")
		}
	}
	if opts.ValidateJSON {
		if e.Before != nil && !ValidJSON(e.Before) {
			return decodeErr(start+len(e.Table)+len(e.RowID), entryField(i, "before"), ErrInvalidJSON, "")
		}
		if e.After != nil && !ValidJSON(e.After) {
			return decodeErr(end-len(e.After), entryField(i, "after"), ErrInvalidJSON, "")
		}
	}
	return nil
}

func entryField(i int, name string) string {
	return fmt.Sprintf("entries[%d].%s", i, name)
}

var zeroChecksum [4]byte

// batchChecksum is the CRC-32 (IEEE) of a cdc_batch frame with its checksum
// field taken as zero. frame must be at least batchFixedSize long.
func batchChecksum(frame []byte) uint32 {
	c := crc32.Update(0, crc32.IEEETable, frame[:36])
	c = crc32.Update(c, crc32.IEEETable, zeroChecksum[:])
	return crc32.Update(c, crc32.IEEETable, frame[40:])
}

// EncodeBatch encodes b as a new cdc_batch frame.
func EncodeBatch(b *Batch) ([]byte, error) {
	return AppendBatch(make([]byte, 0, b.EncodedSize()), b)
}

// AppendBatch appends b's cdc_batch frame to dst. The frame carries the flags
// HAS_CORRELATION_ID (when CorrelationID is not empty) and IS_RETRY (when
// b.Retry), and a CRC-32 computed with the checksum field zeroed. It fails
// when a field is too long for its length prefix or the frame would exceed
// MaxMessageSize.
func AppendBatch(dst []byte, b *Batch) ([]byte, error) {
	size := b.EncodedSize()
	if size > MaxMessageSize {
		return dst, fmt.Errorf("%w: batch frame would be %d bytes", ErrTooLarge, size)
	}
	if len(b.SourceID) > 0xFFFF {
		return dst, fmt.Errorf("%w: sourceDoId is %d bytes", ErrFieldTooLong, len(b.SourceID))
	}
	if len(b.CorrelationID) > 0xFFFF {
		return dst, fmt.Errorf("%w: correlationId is %d bytes", ErrFieldTooLong, len(b.CorrelationID))
	}
	start := len(dst)
	dst = grow(dst, size)
	f := dst[start : start+size]
	var flags Flags
	if len(b.CorrelationID) > 0 {
		flags |= FlagHasCorrelation
	}
	if b.Retry {
		flags |= FlagIsRetry
	}
	putHeader(f, TypeCDCBatch, flags, b.Timestamp, b.Sequence)
	le.PutUint16(f[24:], uint16(len(b.SourceID)))
	le.PutUint32(f[26:], uint32(len(b.Entries)))
	off := batchFixedSize + len(b.SourceID) + len(b.CorrelationID)
	le.PutUint32(f[30:], uint32(size-off))
	le.PutUint16(f[34:], uint16(len(b.CorrelationID)))
	le.PutUint32(f[36:], 0)
	copy(f[batchFixedSize:], b.SourceID)
	copy(f[batchFixedSize+len(b.SourceID):], b.CorrelationID)
	le.PutUint32(f[off:], uint32(len(b.Entries)))
	off += 4
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.Op > OpDelete {
			return dst[:start], fmt.Errorf("%w: entries[%d] has code %d", ErrUnknownOperation, i, e.Op)
		}
		if len(e.Table) > 0xFFFF || len(e.RowID) > 0xFFFF {
			return dst[:start], fmt.Errorf("%w: entries[%d] table or row id longer than 65535 bytes", ErrFieldTooLong, i)
		}
		p := f[off : off+entryFixedSize]
		le.PutUint64(p, e.Sequence)
		le.PutUint64(p[8:], e.Timestamp)
		p[16] = byte(e.Op)
		le.PutUint16(p[17:], uint16(len(e.Table)))
		le.PutUint16(p[19:], uint16(len(e.RowID)))
		le.PutUint32(p[21:], uint32(len(e.Before)))
		le.PutUint32(p[25:], uint32(len(e.After)))
		off += entryFixedSize
		off += copy(f[off:], e.Table)
		off += copy(f[off:], e.RowID)
		off += copy(f[off:], e.Before)
		off += copy(f[off:], e.After)
	}
	le.PutUint32(f[36:], crc32.ChecksumIEEE(f))
	return dst, nil
}

// grow extends dst by n bytes, reallocating at most once.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		nd := make([]byte, len(dst), len(dst)+n)
		copy(nd, dst)
		dst = nd
	}
	return dst[:len(dst)+n]
}

// Clone returns a deep copy of b whose slices share one new buffer.
func (b *Batch) Clone() *Batch {
	size := len(b.SourceID) + len(b.CorrelationID)
	for i := range b.Entries {
		e := &b.Entries[i]
		size += len(e.Table) + len(e.RowID) + len(e.Before) + len(e.After)
	}
	buf := make([]byte, 0, size)
	c := *b
	buf, c.SourceID = appendOwned(buf, b.SourceID)
	buf, c.CorrelationID = appendOwned(buf, b.CorrelationID)
	c.Entries = make([]Entry, len(b.Entries))
	for i := range b.Entries {
		e := b.Entries[i]
		buf, e.Table = appendOwned(buf, e.Table)
		buf, e.RowID = appendOwned(buf, e.RowID)
		buf, e.Before = appendOwned(buf, e.Before)
		buf, e.After = appendOwned(buf, e.After)
		c.Entries[i] = e
	}
	return &c
}

func appendOwned(buf, s []byte) ([]byte, []byte) {
	if s == nil {
		return buf, nil
	}
	n := len(buf)
	buf = append(buf, s...)
	return buf, buf[n:len(buf):len(buf)]
}
