package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotFound is returned by ReadRange for a record the log does not hold:
// never appended, not yet durable, or in a segment already deleted.
var ErrNotFound = errors.New("wal: record not in the log")

// ReadRange reads the durable records from..to (inclusive, in LSN order) and
// calls fn for each. Unlike Replay it does not reuse memory: rec belongs to
// the caller, who may keep it (the records of one segment share one
// allocation, of about the size of the range). Records are verified (LSN,
// CRC) as they are read.
//
// It is meant for records the caller keeps unreleased: the server reads back
// batches it dropped from memory when its memory budget was full. Each
// segment's byte range is read with one positioned read, located through the
// offsets the log keeps per record, so the cost is the range's size, not the
// segment's. fn must not call Release or Close.
func (l *Log) ReadRange(from, to LSN, fn func(lsn LSN, rec []byte) error) error {
	if from == 0 || to < from {
		return fmt.Errorf("wal: read range %d..%d: invalid", from, to)
	}
	type part struct {
		path     string
		f        *os.File
		first    LSN // first record of the part
		n        int // records in the part
		off, end int64
	}
	var parts []part
	defer func() {
		for _, p := range parts {
			p.f.Close()
		}
	}()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if to > l.lastDurable {
		last := l.lastDurable
		l.mu.Unlock()
		return fmt.Errorf("%w: read range %d..%d beyond the last durable record %d", ErrNotFound, from, to, last)
	}
	next := from
	for _, s := range l.segments {
		if next > to {
			break
		}
		if s.last == 0 || s.last < next || s.first > next {
			continue
		}
		hi := min(to, s.last)
		i, j := int(next-s.first), int(hi-s.first)
		if j >= len(s.offs) {
			l.mu.Unlock()
			return fmt.Errorf("wal: segment %s: no offset for record %d", s.path, hi)
		}
		end := s.size
		if j+1 < len(s.offs) {
			end = s.offs[j+1]
		}
		// Opened under mu: a segment is unlinked only after it has left
		// l.segments (under mu), so the file cannot vanish meanwhile.
		f, err := os.Open(s.path)
		if err != nil {
			l.mu.Unlock()
			return fmt.Errorf("wal: open segment: %w", err)
		}
		parts = append(parts, part{path: s.path, f: f, first: next, n: j - i + 1, off: s.offs[i], end: end})
		next = hi + 1
	}
	l.mu.Unlock()
	if next <= to {
		return fmt.Errorf("%w: record %d (released, or the range starts before the oldest segment)", ErrNotFound, next)
	}
	for _, p := range parts {
		buf := make([]byte, p.end-p.off)
		if _, err := p.f.ReadAt(buf, p.off); err != nil && err != io.EOF {
			return fmt.Errorf("wal: read %s: %w", p.path, err)
		}
		pos := 0
		for k := range p.n {
			lsn := p.first + LSN(k)
			if len(buf)-pos < headerSize {
				return &CorruptError{Segment: p.path, Offset: p.off + int64(pos), Reason: "truncated header"}
			}
			n, crc, got := parseHeader(buf[pos : pos+headerSize])
			switch {
			case got != lsn:
				return &CorruptError{Segment: p.path, Offset: p.off + int64(pos), Reason: fmt.Sprintf("LSN %d, want %d", got, lsn)}
			case int(n) > len(buf)-pos-headerSize:
				return &CorruptError{Segment: p.path, Offset: p.off + int64(pos), Reason: "truncated record"}
			}
			rec := buf[pos+headerSize : pos+headerSize+int(n) : pos+headerSize+int(n)]
			if finishCRC(payloadCRC(rec), lsn) != crc {
				return &CorruptError{Segment: p.path, Offset: p.off + int64(pos), Reason: "CRC mismatch"}
			}
			if err := fn(lsn, rec); err != nil {
				return err
			}
			pos += headerSize + int(n)
		}
	}
	return nil
}
