package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// LSN is a log sequence number. LSNs start at 1 and increase by one per
// record, across segments and across restarts; 0 means "no record".
type LSN uint64

// MaxRecordBytes is the largest payload Append accepts: a batch frame of the
// protocol's maximum size (codec.MaxMessageSize) plus 256 KiB for what the
// server wraps around it (source id and shard name, up to 64 KiB each).
// Readers reject any length field above it before allocating, so a corrupt
// length can never trigger a huge allocation.
const MaxRecordBytes = codec.MaxMessageSize + 256<<10

const (
	defaultSegmentBytes = 64 << 20
	defaultMaxBytes     = 1 << 30

	// maxPooledFrame bounds the frames kept in the buffer pool so that an
	// occasional 16 MiB record does not pin 16 MiB forever.
	maxPooledFrame = 4 << 20
)

// Options configures Open.
type Options struct {
	// Dir is the directory holding the segments and the released marker.
	// Required; created if missing.
	Dir string
	// SegmentBytes is the size beyond which the writer rolls to a new
	// segment file. A record larger than this gets a segment of its own.
	// Default 64 MiB; lowered to MaxBytes/4 if larger, so that releasing
	// records can always free most of the cap.
	SegmentBytes int64
	// MaxBytes caps the bytes on disk across all segments (including bytes
	// queued but not yet written). Append returns ErrFull, without writing,
	// when the record would exceed it; nothing is ever evicted. Default 1 GiB.
	MaxBytes int64
	// NoSync skips every fsync (segments, directory, marker). For tests and
	// benchmarks only: records are not durable.
	NoSync bool
	// Logger receives warnings (torn tails) and errors. Default slog.Default().
	Logger *slog.Logger

	// fs opens segment files for writing; nil means the operating system.
	// Tests set it to inject faults.
	fs fileSystem
	// afterCommit, when set (by tests), runs in the writer after each
	// group commit, before it takes the next batch.
	afterCommit func(err error)
}

var (
	// ErrFull is returned by Append when the record would push the log past
	// Options.MaxBytes. The caller should apply backpressure until Release
	// frees segments.
	ErrFull = errors.New("wal: log full")
	// ErrClosed is returned by operations on a closed Log.
	ErrClosed = errors.New("wal: log closed")
	// ErrCorrupt is wrapped by *CorruptError when a segment holds damaged
	// data that cannot be explained by a torn write.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrTooLarge is returned by Append for records above MaxRecordBytes.
	ErrTooLarge = errors.New("wal: record too large")
	// ErrFailed is wrapped (together with the I/O error that caused it) by
	// the error of every append that a write or fsync failure made fail,
	// and of every append refused afterwards until Recover succeeds. Such
	// a record was never acknowledged: the caller may send it again once
	// the log has recovered.
	ErrFailed = errors.New("wal: log failed")
)

// CorruptError reports where corruption was found. errors.Is(err,
// ErrCorrupt) is true for it.
type CorruptError struct {
	Segment string // path of the segment file (or marker file)
	Offset  int64  // byte offset of the bad record within Segment
	Reason  string // what was wrong
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt segment %s at offset %d: %s", e.Segment, e.Offset, e.Reason)
}

// Unwrap returns ErrCorrupt so that errors.Is works.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Stats is a point-in-time snapshot of the log's counters.
type Stats struct {
	SizeBytes   int64  // bytes on disk in all segments
	Segments    int    // number of segment files
	Appends     uint64 // records durably appended since Open
	Syncs       uint64 // segment fsyncs since Open (one per group commit, plus one per roll); counted even with NoSync
	Bytes       uint64 // payload bytes durably appended since Open
	FirstLSN    LSN    // oldest record still on disk (possibly released); 0 if none
	LastLSN     LSN    // newest durable record; 0 if none
	ReleasedLSN LSN    // highest released LSN
	MaxBytes    int64  // configured cap

	Err        error     // the write or fsync failure the log is stopped by; nil while it accepts appends
	FailedAt   time.Time // when Err happened; zero while healthy
	Failures   uint64    // write or fsync failures since Open (each stops the log until Recover)
	Recoveries uint64    // successful Recover calls since Open
	LastError  string    // the most recent failure, kept after recovery; "" if none
}

// segment describes one segment file. first is fixed; size and last are
// published by the writer (under Log.mu) after the bytes are fsync'd.
type segment struct {
	first LSN
	last  LSN // 0 while the segment holds no record
	size  int64
	path  string
	// offs[i] is the offset of record first+i, for ReadRange; published
	// with size and last.
	offs []int64
}

// request is one queued append. The writer owns frame once it is queued.
type request struct {
	lsn   LSN
	frame *[]byte
	done  chan error // buffered(1); receives the outcome exactly once
}

// Log is a durable, segmented write-ahead log. It is safe for concurrent use.
type Log struct {
	opts   Options
	logger *slog.Logger

	frames sync.Pool // *[]byte frame buffers, reused between appends

	// releaseMu serialises Release (marker write + deletions) and lets
	// Close wait for an in-progress Release.
	releaseMu sync.Mutex

	wake       chan struct{} // buffered(1): "queue non-empty or closing"
	writerDone chan struct{}

	mu          sync.Mutex
	closed      bool
	failErr     error     // write/fsync failure; the log accepts nothing until Recover clears it
	failedAt    time.Time // when failErr was set
	failures    uint64
	recoveries  uint64
	lastErr     string
	queue       []*request
	nextLSN     LSN
	lastDurable LSN
	released    LSN
	segments    []*segment // sorted by first; the last one is the active segment
	sizeBytes   int64      // bytes on disk in segments
	reserved    int64      // frame bytes queued but not yet published in sizeBytes
	appends     uint64
	syncs       uint64
	bytes       uint64
	// ackedSeg and ackedOff locate the end of record lastDurable: the
	// segment holding it and the offset just after it. Everything beyond
	// was never acknowledged; Recover cuts the log there. ackedSeg is nil
	// when no record was ever written.
	ackedSeg *segment
	ackedOff int64

	// Writer-goroutine state (touched only by the writer; by Recover while
	// failErr is set, when the writer does not touch files; and by Close
	// after the writer has exited).
	active    segmentFile
	activeSeg *segment
	activeOff int64 // bytes written to active (may exceed activeSeg.size until published)
	activeLst LSN   // last LSN written to active
	coalesce  []byte
	pendOffs  []int64 // offsets of the records written to active since the last publish
}

// Open opens (or creates) the log in opts.Dir. It verifies every segment,
// truncates a torn tail in the last segment, fails with a *CorruptError on
// anything else that is damaged, and positions the log for appending. Call
// Replay to read back the unreleased records.
//
// Only one Log may use a directory at a time; Open does not lock it.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: Options.Dir is required")
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = defaultMaxBytes
	}
	if opts.SegmentBytes > opts.MaxBytes/4 {
		// The active segment is never deleted by Release, so a segment
		// close to MaxBytes could leave the log permanently full.
		opts.SegmentBytes = max(opts.MaxBytes/4, 1)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.fs == nil {
		opts.fs = osFS{}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create dir: %w", err)
	}
	l := &Log{
		opts:       opts,
		logger:     opts.Logger.With("component", "wal", "dir", opts.Dir),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
	}
	if err := l.recover(); err != nil {
		return nil, err
	}
	if n := len(l.segments); n > 0 {
		// Reuse the last segment for appending: it may be partly filled, or
		// even empty if we crashed right after creating it.
		s := l.segments[n-1]
		f, err := l.opts.fs.OpenFile(s.path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("wal: open active segment: %w", err)
		}
		l.active, l.activeSeg, l.activeOff, l.activeLst = f, s, s.size, s.last
	}
	go l.run()
	return l, nil
}

// Append writes rec to the log and returns its LSN once the record is
// durable (fsync'd), sharing the fsync with every other append queued at the
// same time. rec is copied before Append enqueues it, so the caller may reuse
// it as soon as Append returns, whatever the outcome.
//
// If ctx is done while the record is queued or being written, Append returns
// the assigned LSN together with ctx.Err(); the record may still be written
// and made durable (and will then be replayed), because removing it would
// leave a gap in the LSN sequence. Callers that retry after a cancellation
// must therefore tolerate duplicates.
//
// Append returns ErrFull without writing when the record would exceed
// Options.MaxBytes, ErrTooLarge above MaxRecordBytes, ErrClosed after Close,
// and an error wrapping ErrFailed and the I/O error when a write or fsync
// failed: then the record is not durable, and the log refuses every append
// until Recover succeeds.
func (l *Log) Append(ctx context.Context, rec []byte) (LSN, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	req, err := l.enqueue(rec)
	if err != nil {
		return 0, err
	}
	select {
	case err := <-req.done:
		if err != nil {
			return 0, err
		}
		return req.lsn, nil
	case <-ctx.Done():
		// Prefer a result that is already there over a racing cancel.
		select {
		case err := <-req.done:
			if err != nil {
				return 0, err
			}
			return req.lsn, nil
		default:
			return req.lsn, ctx.Err()
		}
	}
}

// AppendAsync enqueues rec like Append but does not wait. The returned
// channel receives exactly one value: nil once the record is durable, or the
// error. On an immediate failure (ErrFull, ErrClosed, ...) the LSN is 0 and
// the error is already in the channel. rec may be reused on return.
func (l *Log) AppendAsync(rec []byte) (LSN, <-chan error) {
	req, err := l.enqueue(rec)
	if err != nil {
		ch := make(chan error, 1)
		ch <- err
		return 0, ch
	}
	return req.lsn, req.done
}

// AppendAsyncFunc is AppendAsync for a record of n bytes that fill writes
// into the log's own buffer: the caller builds its record in place instead
// of building it elsewhere for the log to copy. fill must set all n bytes
// and must not keep the slice; it runs before AppendAsyncFunc returns, and
// not at all when the record is refused for its size.
func (l *Log) AppendAsyncFunc(n int, fill func(rec []byte)) (LSN, <-chan error) {
	req, err := l.enqueueFunc(n, fill)
	if err != nil {
		ch := make(chan error, 1)
		ch <- err
		return 0, ch
	}
	return req.lsn, req.done
}

// enqueue frames rec, assigns its LSN and hands it to the writer.
func (l *Log) enqueue(rec []byte) (*request, error) {
	return l.enqueueFunc(len(rec), func(dst []byte) { copy(dst, rec) })
}

// enqueueFunc frames the record of n bytes fill writes, assigns its LSN and
// hands it to the writer.
func (l *Log) enqueueFunc(n int, fill func([]byte)) (*request, error) {
	if n > MaxRecordBytes || n < 0 {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, n, MaxRecordBytes)
	}
	need := int64(headerSize + n)
	// Fill and checksum before taking the lock: they are the expensive part
	// and this way they run in parallel across appenders, off the writer's
	// path. A record that then turns out not to fit wastes one copy.
	fp := l.getFrame(int(need))
	frame := *fp
	fill(frame[headerSize:])
	partial := payloadCRC(frame[headerSize:])

	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		l.putFrame(fp)
		return nil, ErrClosed
	case l.failErr != nil:
		err := fmt.Errorf("%w (refusing appends until it recovers): %w", ErrFailed, l.failErr)
		l.mu.Unlock()
		l.putFrame(fp)
		return nil, err
	case l.sizeBytes+l.reserved+need > l.opts.MaxBytes:
		size, res := l.sizeBytes, l.reserved
		l.mu.Unlock()
		l.putFrame(fp)
		return nil, fmt.Errorf("%w: %d on disk + %d queued + %d > max %d", ErrFull, size, res, need, l.opts.MaxBytes)
	}
	lsn := l.nextLSN
	l.nextLSN++
	l.reserved += need
	putHeader(frame, uint32(n), finishCRC(partial, lsn), lsn)
	req := &request{lsn: lsn, frame: fp, done: make(chan error, 1)}
	l.queue = append(l.queue, req)
	l.mu.Unlock()

	select {
	case l.wake <- struct{}{}:
	default: // writer already has a pending wake-up
	}
	return req, nil
}

func (l *Log) getFrame(n int) *[]byte {
	if v, ok := l.frames.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n)
	return &b
}

func (l *Log) putFrame(p *[]byte) {
	if cap(*p) <= maxPooledFrame {
		l.frames.Put(p)
	}
}

// Release declares every record with LSN <= upTo as no longer needed. It
// durably records the released point (so a restart does not replay those
// records even if they share a segment with unreleased ones) and deletes
// every non-active segment whose records are all <= upTo. The active
// segment is deleted later, by the writer, once it rolls past it.
//
// Release is idempotent and monotonic: releasing at or below the current
// released point is a no-op. Releasing beyond the last durable LSN is an
// error.
func (l *Log) Release(upTo LSN) error {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()

	l.mu.Lock()
	closed, released, last := l.closed, l.released, l.lastDurable
	l.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case upTo <= released:
		return nil
	case upTo > last:
		return fmt.Errorf("wal: release %d beyond last durable LSN %d", upTo, last)
	}

	// Marker first, deletions second: a crash in between leaves fully
	// released segments on disk, which Open deletes.
	if err := l.writeMarker(upTo); err != nil {
		return err
	}

	l.mu.Lock()
	l.released = upTo
	var victims []*segment
	for len(l.segments) > 1 { // never the last (active) segment
		s := l.segments[0]
		if s.last == 0 || s.last > upTo {
			break
		}
		victims = append(victims, s)
		l.segments = l.segments[1:]
	}
	l.mu.Unlock()

	return l.deleteSegments(victims)
}

// deleteSegments removes segment files already detached from l.segments,
// fsyncs the directory and then shrinks sizeBytes (after the unlink, so the
// cap never under-counts).
func (l *Log) deleteSegments(victims []*segment) error {
	if len(victims) == 0 {
		return nil
	}
	var freed int64
	var errs []error
	for _, s := range victims {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("wal: delete segment: %w", err))
			continue
		}
		freed += s.size
	}
	if err := l.syncDir(); err != nil {
		errs = append(errs, err)
	}
	l.mu.Lock()
	l.sizeBytes -= freed
	l.mu.Unlock()
	return errors.Join(errs...)
}

// Stats returns a snapshot of the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Stats{
		SizeBytes:   l.sizeBytes,
		Segments:    len(l.segments),
		Appends:     l.appends,
		Syncs:       l.syncs,
		Bytes:       l.bytes,
		LastLSN:     l.lastDurable,
		ReleasedLSN: l.released,
		MaxBytes:    l.opts.MaxBytes,
		Err:         l.failErr,
		FailedAt:    l.failedAt,
		Failures:    l.failures,
		Recoveries:  l.recoveries,
		LastError:   l.lastErr,
	}
	for _, s := range l.segments {
		if s.last != 0 {
			st.FirstLSN = s.first
			break
		}
	}
	return st
}

// Close stops accepting appends, waits until every already queued append
// has been written and fsync'd (their Append calls succeed), waits for an
// in-progress Release, closes the files and stops the writer goroutine.
// Calling Close again returns nil.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.writerDone

	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	var err error
	if l.active != nil {
		err = l.active.Close()
		l.active = nil
	}
	return err
}

// syncDir fsyncs the log directory so that file creations, deletions and
// renames are durable.
func (l *Log) syncDir() error {
	if l.opts.NoSync {
		return nil
	}
	d, err := os.Open(l.opts.Dir)
	if err != nil {
		return fmt.Errorf("wal: open dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: sync dir: %w", err)
	}
	return nil
}

func (l *Log) segmentPath(first LSN) string {
	return filepath.Join(l.opts.Dir, segmentName(first))
}

func segmentName(first LSN) string { return fmt.Sprintf("%020d%s", uint64(first), segmentExt) }
