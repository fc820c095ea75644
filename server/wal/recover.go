package wal

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// probeBytes is the size of the write+fsync probe with which Recover checks
// a fresh segment before the log accepts appends again: about one typical
// batch (1,000 W1 entries), so that a disk with only a few pages free is
// not reported writable only to fail on the next batch.
const probeBytes = 256 << 10

// Recover brings a log stopped by a write or fsync failure back into
// service, without a restart. It is a no-op (nil) on a healthy log and
// returns ErrClosed after Close. On failure the log stays stopped and
// Recover may be called again (with backoff: each call probes the disk).
//
// Every append that failed, or was taken by the writer before Recover
// succeeds, reports an error wrapping ErrFailed: none of them is durable.
// The caller must not vouch for anything it accepted on the strength of such
// an append (the server rolls its sequencing back before it calls Recover).
//
// What Recover does, in order:
//
//  1. It cuts the log back to the last acknowledged record (lastDurable):
//     every segment whose first LSN is above it is deleted, including a
//     file a failed roll left behind, and the segment holding it is
//     truncated to the offset just after it and fsync'd. This drops the
//     torn tail (a partial record from ENOSPC in the middle of a write),
//     and also complete records of the failed group commit, even those a
//     roll had already fsync'd into the previous segment: none of them was
//     acknowledged, their senders were told to retry, and keeping them
//     would store the resent batches twice after a restart.
//  2. It creates a new segment, whose first LSN is lastDurable+1 (the LSNs
//     of the failed appends are handed out again), and makes its directory
//     entry durable.
//  3. It probes the new segment: writes probeBytes of zeros, fsyncs,
//     truncates it back to empty and fsyncs again. Only then does the log
//     accept appends. (Should the process crash before the truncation is
//     durable, Open sees zeros where a record header should be and treats
//     them as a torn tail.)
//
// "fsyncgate": after a failed fsync, Linux may mark the dirty pages clean
// (or drop them) and report success to the next fsync, and a read returns
// the page cache's copy, not what is on disk. So Recover never trusts the
// page cache for bytes written after the last successful fsync: it does not
// re-read them (a read would come from the cache and prove nothing), and it
// does not fsync the failed file again in the hope of making them durable.
// It treats every record not covered by a successful fsync as not durable
// and cuts it off at an offset it knows from its own bookkeeping (not by
// scanning). Records up to lastDurable were covered by an fsync that
// succeeded before the failure, were acknowledged, and stay. New records go
// to a new file, so no later fsync is ever relied on for pages dirtied
// before the failure. This is the cheaper and portable choice: re-reading
// from disk would need O_DIRECT (not supported everywhere, tmpfs included)
// and could only confirm records that were never acknowledged anyway.
func (l *Log) Recover() error {
	l.releaseMu.Lock() // no Release (segment deletion, marker) meanwhile
	defer l.releaseMu.Unlock()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.failErr == nil {
		l.mu.Unlock()
		return nil
	}
	durable := l.lastDurable
	acked, ackedOff := l.ackedSeg, l.ackedOff
	l.mu.Unlock()

	// While failErr is set the writer does not touch the files, so the
	// writer state is ours until failErr is cleared below.
	if l.active != nil {
		_ = l.active.Close() // the outcome of a failed file's close tells nothing more
		l.active = nil
	}
	l.coalesce = l.coalesce[:0]
	l.pendOffs = l.pendOffs[:0]

	// 1. Cut back to the last acknowledged record.
	if err := l.removeSegmentsAfter(durable); err != nil {
		return err
	}
	l.mu.Lock()
	keep := l.segments[:0]
	for _, s := range l.segments {
		if s.first <= durable {
			keep = append(keep, s)
		}
	}
	clear(l.segments[len(keep):])
	l.segments = keep
	ackedPresent := false
	for _, s := range keep {
		if s == acked {
			ackedPresent = true
		}
	}
	l.mu.Unlock()
	if ackedPresent {
		if err := l.cutSegment(acked, ackedOff); err != nil {
			return err
		}
		l.mu.Lock()
		acked.size = ackedOff
		acked.last = durable
		acked.offs = acked.offs[:durable-acked.first+1]
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.sizeBytes = 0
	for _, s := range l.segments {
		l.sizeBytes += s.size
	}
	l.mu.Unlock()

	// 2. A new segment.
	seg := &segment{first: durable + 1, path: l.segmentPath(durable + 1)}
	f, err := l.opts.fs.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("wal: recover: create segment: %w", err)
	}
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(seg.path) // best effort: the next Recover removes it anyway
		return fmt.Errorf("wal: recover: %w", err)
	}
	if err := l.syncDir(); err != nil {
		return fail(err)
	}
	// 3. Probe it.
	if err := l.probe(f, seg.path); err != nil {
		return fail(err)
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fail(ErrClosed)
	}
	// Appends still queued were enqueued before the failure (the log
	// refuses appends while failed) and carry LSNs that are handed out
	// again now: fail them here, before the writer can take them.
	stale := l.queue
	l.queue = nil
	failErr := l.failErr
	for _, r := range stale {
		l.reserved -= int64(len(*r.frame))
	}
	l.segments = append(l.segments, seg)
	l.active, l.activeSeg, l.activeOff, l.activeLst = f, seg, 0, 0
	l.nextLSN = durable + 1
	l.failErr = nil
	l.failedAt = time.Time{}
	l.recoveries++
	l.mu.Unlock()
	for _, r := range stale {
		r.done <- fmt.Errorf("%w (refusing appends until it recovers): %w", ErrFailed, failErr)
		l.putFrame(r.frame)
		r.frame = nil
	}
	l.logger.Info("wal: recovered; accepting appends again", "last_durable_lsn", durable, "segment", seg.path)
	return nil
}

// removeSegmentsAfter deletes every segment file whose first LSN is above
// durable: segments the log still lists (they hold only records that were
// never acknowledged) and a file a failed roll created but never listed.
func (l *Log) removeSegmentsAfter(durable LSN) error {
	entries, err := os.ReadDir(l.opts.Dir)
	if err != nil {
		return fmt.Errorf("wal: recover: read dir: %w", err)
	}
	removed := false
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), segmentExt)
		if !ok || len(base) != 20 {
			continue
		}
		first, err := strconv.ParseUint(base, 10, 64)
		if err != nil || LSN(first) <= durable {
			continue
		}
		if err := os.Remove(l.segmentPath(LSN(first))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal: recover: remove unacknowledged segment: %w", err)
		}
		removed = true
	}
	if removed {
		return l.syncDir()
	}
	return nil
}

// cutSegment truncates s to size (the end of the last acknowledged record)
// through a new file handle and fsyncs it.
func (l *Log) cutSegment(s *segment, size int64) error {
	f, err := l.opts.fs.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: recover: open %s: %w", s.path, err)
	}
	err = f.Truncate(size)
	if err == nil && !l.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: recover: cut %s at %d: %w", s.path, size, err)
	}
	return nil
}

// probe writes probeBytes to the empty segment f, fsyncs, and truncates it
// back to empty, fsync'd: proof that the disk takes writes again.
func (l *Log) probe(f segmentFile, path string) error {
	n, err := f.WriteAt(make([]byte, probeBytes), 0)
	if err == nil && n != probeBytes {
		err = fmt.Errorf("short write of %d bytes", n)
	}
	if err == nil && !l.opts.NoSync {
		err = f.Sync()
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil && !l.opts.NoSync {
		err = f.Sync()
	}
	if err != nil {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	return nil
}
