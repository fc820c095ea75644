package wal

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	headerSize = 16 // u32 length, u32 CRC-32C, u64 LSN
	segmentExt = ".wal"
	markerName = "released"
	markerTmp  = "released.tmp"
	markerSize = 12 // u64 LSN, u32 CRC-32C of it
	readBuf    = 1 << 20
)

// castagnoli is a read-only lookup table (hardware accelerated on amd64 and
// arm64); it is not mutable state.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// payloadCRC is the first half of a record checksum; see finishCRC.
func payloadCRC(payload []byte) uint32 { return crc32.Update(0, castagnoli, payload) }

// finishCRC folds the LSN into a payload checksum. The record CRC therefore
// covers payload || LSN (little-endian).
func finishCRC(partial uint32, lsn LSN) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(lsn))
	return crc32.Update(partial, castagnoli, b[:])
}

func putHeader(frame []byte, n, crc uint32, lsn LSN) {
	binary.LittleEndian.PutUint32(frame[0:4], n)
	binary.LittleEndian.PutUint32(frame[4:8], crc)
	binary.LittleEndian.PutUint64(frame[8:16], uint64(lsn))
}

func parseHeader(h []byte) (n, crc uint32, lsn LSN) {
	return binary.LittleEndian.Uint32(h[0:4]), binary.LittleEndian.Uint32(h[4:8]), LSN(binary.LittleEndian.Uint64(h[8:16]))
}

// recordReader reads consecutive records of one segment, verifying each.
type recordReader struct {
	r    *bufio.Reader
	size int64 // bytes of the segment that may be read
	off  int64 // offset of the next record
	hdr  [headerSize]byte
	buf  []byte // payload of the last record; reused
}

func newRecordReader(f io.Reader, size int64, buf []byte) *recordReader {
	return &recordReader{r: bufio.NewReaderSize(f, readBuf), size: size, buf: buf}
}

// next reads the record at rr.off, which must carry LSN want. It returns
// io.EOF at a clean end, a non-empty reason for a bad record (rr.off then
// still points at it), or an I/O error.
func (rr *recordReader) next(want LSN) (payload []byte, reason string, err error) {
	left := rr.size - rr.off
	if left == 0 {
		return nil, "", io.EOF
	}
	if left < headerSize {
		return nil, fmt.Sprintf("truncated header: %d of %d bytes", left, headerSize), nil
	}
	if _, err := io.ReadFull(rr.r, rr.hdr[:]); err != nil {
		return nil, "", err
	}
	n, crc, lsn := parseHeader(rr.hdr[:])
	switch {
	case n > MaxRecordBytes:
		// Checked before allocating: a garbage length must not cause a
		// multi-GiB allocation.
		return nil, fmt.Sprintf("record length %d exceeds max %d", n, MaxRecordBytes), nil
	case lsn != want:
		return nil, fmt.Sprintf("LSN %d, want %d", lsn, want), nil
	case int64(n) > left-headerSize:
		return nil, fmt.Sprintf("truncated record: payload %d bytes, %d available", n, left-headerSize), nil
	}
	if cap(rr.buf) < int(n) {
		rr.buf = make([]byte, n)
	}
	rr.buf = rr.buf[:n]
	if _, err := io.ReadFull(rr.r, rr.buf); err != nil {
		return nil, "", err
	}
	if got := finishCRC(payloadCRC(rr.buf), lsn); got != crc {
		return nil, fmt.Sprintf("CRC mismatch: stored %08x, computed %08x", crc, got), nil
	}
	rr.off += headerSize + int64(n)
	return rr.buf, "", nil
}

// recover scans the directory: reads the released marker, verifies every
// segment, truncates a torn tail in the last one, deletes segments that are
// fully released, and sets nextLSN, lastDurable and sizeBytes.
func (l *Log) recover() error {
	dir := l.opts.Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wal: read dir: %w", err)
	}
	var segs []*segment
	for _, e := range entries {
		name := e.Name()
		if name == markerTmp {
			// A Release crashed before its rename; the old marker stands.
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		base, ok := strings.CutSuffix(name, segmentExt)
		if !ok || len(base) != 20 || !e.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(base, 10, 64)
		if err != nil || first == 0 {
			continue
		}
		segs = append(segs, &segment{first: LSN(first), path: filepath.Join(dir, name)})
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmp.Compare(a.first, b.first) })

	released, err := l.readMarker()
	if err != nil {
		return err
	}

	next := released + 1
	if len(segs) > 0 {
		if segs[0].first > next {
			return &CorruptError{Segment: segs[0].path, Reason: fmt.Sprintf(
				"first segment starts at LSN %d but only LSNs <= %d are released: records missing", segs[0].first, released)}
		}
		next = segs[0].first
	}
	var buf []byte
	for i, s := range segs {
		if s.first != next {
			return &CorruptError{Segment: s.path, Reason: fmt.Sprintf("segment starts at LSN %d, want %d (missing or overlapping segment)", s.first, next)}
		}
		buf, err = l.scanSegment(s, i == len(segs)-1, buf)
		if err != nil {
			return err
		}
		if s.last != 0 {
			next = s.last + 1
		}
	}
	if next <= released {
		return &CorruptError{Segment: filepath.Join(dir, markerName), Reason: fmt.Sprintf(
			"released LSN %d is beyond the last record %d", released, next-1)}
	}

	// Drop non-last segments that hold nothing unreleased: leftovers of a
	// Release (or roll) that crashed between marker and deletion, or an
	// empty file from a crash right after creating a segment.
	var victims []*segment
	for len(segs) > 1 && (segs[0].last == 0 || segs[0].last <= released) {
		victims = append(victims, segs[0])
		segs = segs[1:]
	}
	for _, s := range segs {
		l.sizeBytes += s.size
	}
	l.segments = segs
	l.released = released
	l.nextLSN = next
	l.lastDurable = next - 1
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i].last != 0 {
			l.ackedSeg, l.ackedOff = segs[i], segs[i].size
			break
		}
	}
	if err := l.deleteSegments(victims); err != nil {
		l.logger.Warn("wal: deleting released segments failed", "err", err)
	}
	return nil
}

// scanSegment verifies every record of s, setting s.last and s.size. In the
// last segment a bad record with nothing valid after it is a torn write and
// is truncated away; everything else is a *CorruptError.
func (l *Log) scanSegment(s *segment, last bool, buf []byte) ([]byte, error) {
	flag := os.O_RDONLY
	if last {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(s.path, flag, 0)
	if err != nil {
		return buf, fmt.Errorf("wal: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, fmt.Errorf("wal: stat segment: %w", err)
	}
	rr := newRecordReader(f, fi.Size(), buf)
	want := s.first
	for {
		off := rr.off
		_, reason, err := rr.next(want)
		if err == io.EOF {
			break
		}
		if err != nil {
			return rr.buf, fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		if reason == "" {
			s.last = want
			s.offs = append(s.offs, off)
			want++
			continue
		}
		if !last {
			return rr.buf, &CorruptError{Segment: s.path, Offset: rr.off, Reason: reason}
		}
		valid, err := validRecordAfter(f, rr.off, fi.Size(), want)
		if err != nil {
			return rr.buf, fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		if valid {
			return rr.buf, &CorruptError{Segment: s.path, Offset: rr.off, Reason: reason + " (valid records follow)"}
		}
		l.logger.Warn("wal: truncating torn tail", "segment", s.path, "offset", rr.off,
			"dropped_bytes", fi.Size()-rr.off, "reason", reason)
		if err := f.Truncate(rr.off); err != nil {
			return rr.buf, fmt.Errorf("wal: truncate torn tail: %w", err)
		}
		if !l.opts.NoSync {
			if err := f.Sync(); err != nil {
				return rr.buf, fmt.Errorf("wal: fsync after truncate: %w", err)
			}
		}
		break
	}
	s.size = rr.off
	return rr.buf, nil
}

// validRecordAfter reports whether any complete, checksum-valid record with
// an LSN >= minLSN starts after offset off (exclusive) in f. It is the
// slow path taken only when the last segment ends in a bad record: it
// distinguishes a torn tail (nothing valid after it) from corruption in
// the middle. Every byte offset is tried because a bad length field makes
// the next record boundary unknown.
func validRecordAfter(f *os.File, off, size int64, minLSN LSN) (bool, error) {
	tail := make([]byte, size-off-1)
	if len(tail) < headerSize {
		return false, nil
	}
	if _, err := f.ReadAt(tail, off+1); err != nil && err != io.EOF {
		return false, err
	}
	// At most len(tail)/headerSize records fit, which bounds plausible LSNs.
	maxLSN := minLSN + LSN(len(tail)/headerSize)
	for p := 0; p+headerSize <= len(tail); p++ {
		n, crc, lsn := parseHeader(tail[p : p+headerSize])
		if lsn < minLSN || lsn > maxLSN || n > MaxRecordBytes || int64(n) > int64(len(tail)-p-headerSize) {
			continue
		}
		payload := tail[p+headerSize : p+headerSize+int(n)]
		if finishCRC(payloadCRC(payload), lsn) == crc {
			return true, nil
		}
	}
	return false, nil
}

// Replay calls fn for every unreleased record, in LSN order, and stops at
// the first error fn returns (which Replay returns). rec is only valid
// during the call: it is reused for the next record. Records are verified
// again while reading.
//
// Replay is meant to run after Open and before the first Append, but it is
// safe concurrently with Append and Release: it visits exactly the records
// that were durable and unreleased when it started, even if some of them
// are released (and their segments deleted) while it runs, because it opens
// every segment it needs up front (an unlinked file stays readable while
// open; its disk space is freed when Replay returns). fn must not call
// Release or Close.
func (l *Log) Replay(fn func(lsn LSN, rec []byte) error) (err error) {
	type open struct {
		seg segment // copy: the writer updates size/last of the live one
		f   *os.File
	}
	var files []open
	defer func() {
		for _, o := range files {
			o.f.Close()
		}
	}()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	released := l.released
	for _, s := range l.segments {
		if s.last == 0 || s.last <= released {
			continue
		}
		// Opened under mu: a segment is unlinked only after it has been
		// removed from l.segments (under mu), so this cannot race with
		// deletion.
		f, err := os.Open(s.path)
		if err != nil {
			l.mu.Unlock()
			return fmt.Errorf("wal: open segment: %w", err)
		}
		files = append(files, open{*s, f})
	}
	l.mu.Unlock()

	var buf []byte
	for _, o := range files {
		buf, err = replaySegment(o.f, o.seg, released, buf, fn)
		if err != nil {
			return err
		}
	}
	return nil
}

func replaySegment(f *os.File, s segment, released LSN, buf []byte, fn func(LSN, []byte) error) ([]byte, error) {
	rr := newRecordReader(f, s.size, buf)
	for lsn := s.first; lsn <= s.last; lsn++ {
		rec, reason, err := rr.next(lsn)
		if err == io.EOF {
			reason = "segment shorter than when opened"
		} else if err != nil {
			return rr.buf, fmt.Errorf("wal: read %s: %w", s.path, err)
		}
		if reason != "" {
			return rr.buf, &CorruptError{Segment: s.path, Offset: rr.off, Reason: reason}
		}
		if lsn <= released {
			continue
		}
		if err := fn(lsn, rec); err != nil {
			return rr.buf, err
		}
	}
	return rr.buf, nil
}

// readMarker returns the released LSN stored in the marker file, 0 if none.
func (l *Log) readMarker() (LSN, error) {
	path := filepath.Join(l.opts.Dir, markerName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("wal: read marker: %w", err)
	}
	if len(b) != markerSize {
		return 0, &CorruptError{Segment: path, Reason: fmt.Sprintf("marker is %d bytes, want %d", len(b), markerSize)}
	}
	lsn := binary.LittleEndian.Uint64(b[0:8])
	if crc32.Checksum(b[0:8], castagnoli) != binary.LittleEndian.Uint32(b[8:12]) {
		return 0, &CorruptError{Segment: path, Reason: "marker CRC mismatch"}
	}
	return LSN(lsn), nil
}

// writeMarker durably replaces the marker: write a temp file, fsync it,
// rename it over the marker, fsync the directory. A crash leaves either the
// old or the new marker, never a torn one.
func (l *Log) writeMarker(lsn LSN) error {
	var b [markerSize]byte
	binary.LittleEndian.PutUint64(b[0:8], uint64(lsn))
	binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b[0:8], castagnoli))
	tmp := filepath.Join(l.opts.Dir, markerTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("wal: write marker: %w", err)
	}
	_, err = f.Write(b[:])
	if err == nil && !l.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(l.opts.Dir, markerName))
	}
	if err != nil {
		return fmt.Errorf("wal: write marker: %w", err)
	}
	return l.syncDir()
}
