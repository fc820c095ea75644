package wal

import (
	"fmt"
	"os"
	"time"
)

const (
	// Frames smaller than coalesceMax are copied into one buffer so that a
	// batch of many small records costs one write syscall; larger frames are
	// written directly from the appender's buffer (an extra 200 KB memcpy
	// buys nothing over a syscall).
	coalesceMax = 64 << 10
	// coalesceFlush bounds the coalescing buffer.
	coalesceFlush = 1 << 20
)

// run is the single writer goroutine. It takes the whole queue at once,
// writes it, fsyncs once and completes every request in the batch. While it
// is busy (mostly inside fsync) new appends pile up in l.queue and form the
// next batch: that is the group commit.
func (l *Log) run() {
	defer close(l.writerDone)
	var batch []*request
	for {
		l.mu.Lock()
		// Swap buffers: the drained batch slice becomes the next queue.
		batch, l.queue = l.queue, batch[:0]
		closed := l.closed
		// Read with the batch, under the same lock: a batch taken while
		// the log is failed is failed, even if Recover succeeds meanwhile
		// (its LSNs are handed out again after the recovery).
		failed := l.failErr
		l.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				// Appends are refused once closed is set (under mu), so an
				// empty queue now stays empty.
				return
			}
			<-l.wake
			continue
		}
		err := l.commit(batch, failed)
		if l.opts.afterCommit != nil {
			l.opts.afterCommit(err)
		}
		clear(batch) // drop references to completed requests
	}
}

// commit makes batch durable and completes its requests. If the log had
// failed when the batch was taken (failed != nil), it writes nothing and
// fails every request.
func (l *Log) commit(batch []*request, failed error) error {
	var total int64
	var payload uint64
	for _, r := range batch {
		total += int64(len(*r.frame))
		payload += uint64(len(*r.frame) - headerSize)
	}
	var published int64
	var err, werr error
	if failed != nil {
		err = fmt.Errorf("%w (refusing appends until it recovers): %w", ErrFailed, failed)
	} else if werr = l.writeBatch(batch, &published); werr != nil {
		err = fmt.Errorf("%w: %w", ErrFailed, werr)
	}

	l.mu.Lock()
	l.reserved -= total - published
	switch {
	case err == nil:
		l.lastDurable = batch[len(batch)-1].lsn
		l.ackedSeg, l.ackedOff = l.activeSeg, l.activeOff
		l.appends += uint64(len(batch))
		l.bytes += payload
	case werr != nil:
		// A failed write or fsync leaves the file in an unknown state:
		// after a failed fsync the kernel may have dropped the dirty pages
		// and a later fsync may report success without writing them
		// ("fsyncgate"). So nothing of this batch is acknowledged, and the
		// log refuses every append until Recover has cut the log back to
		// the last acknowledged record and proved a fresh segment writable.
		l.failErr = werr
		l.failedAt = time.Now()
		l.failures++
		l.lastErr = werr.Error()
		l.logger.Error("wal: write or fsync failed; refusing appends until the log recovers", "err", werr)
	}
	l.mu.Unlock()

	for _, r := range batch {
		r.done <- err
		l.putFrame(r.frame)
		r.frame = nil
	}
	return err
}

// writeBatch writes every frame of batch, rolling segments as needed, and
// fsyncs. *published accumulates the bytes moved from l.reserved to
// l.sizeBytes.
func (l *Log) writeBatch(batch []*request, published *int64) error {
	l.mu.Lock()
	released := l.released
	l.mu.Unlock()

	for _, r := range batch {
		frame := *r.frame
		cur := l.activeOff + int64(len(l.coalesce))
		// Roll when the record would overflow the segment, or when every
		// record in the active segment has been released (so that segment
		// can be deleted instead of pinning disk space against MaxBytes).
		// Never roll an empty segment: an oversized record gets its own.
		if l.active == nil || (cur > 0 && (cur+int64(len(frame)) > l.opts.SegmentBytes || l.activeLst <= released)) {
			if err := l.roll(r.lsn, published); err != nil {
				return err
			}
		}
		l.pendOffs = append(l.pendOffs, l.activeOff+int64(len(l.coalesce)))
		if err := l.writeFrame(frame); err != nil {
			return err
		}
		l.activeLst = r.lsn
	}
	if err := l.flush(); err != nil {
		return err
	}
	if err := l.syncActive(); err != nil {
		return err
	}
	l.publish(published)
	return nil
}

func (l *Log) writeFrame(frame []byte) error {
	if len(frame) >= coalesceMax {
		if err := l.flush(); err != nil {
			return err
		}
		return l.writeAt(frame)
	}
	l.coalesce = append(l.coalesce, frame...)
	if len(l.coalesce) >= coalesceFlush {
		return l.flush()
	}
	return nil
}

func (l *Log) flush() error {
	if len(l.coalesce) == 0 {
		return nil
	}
	err := l.writeAt(l.coalesce)
	l.coalesce = l.coalesce[:0]
	return err
}

// writeAt writes at the tracked offset. Using pwrite with our own offset
// (rather than O_APPEND) keeps the file position irrelevant.
func (l *Log) writeAt(p []byte) error {
	if _, err := l.active.WriteAt(p, l.activeOff); err != nil {
		return fmt.Errorf("wal: write %s: %w", l.activeSeg.path, err)
	}
	l.activeOff += int64(len(p))
	return nil
}

func (l *Log) syncActive() error {
	if !l.opts.NoSync {
		if err := l.active.Sync(); err != nil {
			return fmt.Errorf("wal: fsync %s: %w", l.activeSeg.path, err)
		}
	}
	l.mu.Lock()
	l.syncs++
	l.mu.Unlock()
	return nil
}

// publish makes the durable state of the active segment visible to Stats,
// Release, Replay and the cap accounting.
func (l *Log) publish(published *int64) {
	l.mu.Lock()
	delta := l.activeOff - l.activeSeg.size
	l.activeSeg.size = l.activeOff
	if l.activeLst != 0 {
		l.activeSeg.last = l.activeLst
	}
	l.activeSeg.offs = append(l.activeSeg.offs, l.pendOffs...)
	l.pendOffs = l.pendOffs[:0]
	l.sizeBytes += delta
	l.reserved -= delta
	l.mu.Unlock()
	*published += delta
}

// roll makes the current segment durable and closes it, then creates the
// segment whose first record is first. A previous segment that is entirely
// released is deleted.
func (l *Log) roll(first LSN, published *int64) error {
	old := l.activeSeg
	if l.active != nil {
		if err := l.flush(); err != nil {
			return err
		}
		if err := l.syncActive(); err != nil {
			return err
		}
		l.publish(published)
		if err := l.active.Close(); err != nil {
			return fmt.Errorf("wal: close %s: %w", old.path, err)
		}
		l.active = nil
	}
	path := l.segmentPath(first)
	f, err := l.opts.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("wal: create segment: %w", err)
	}
	// The new file's directory entry must be durable before records in it
	// are acknowledged.
	if err := l.syncDir(); err != nil {
		f.Close()
		return err
	}
	seg := &segment{first: first, path: path}

	var victims []*segment
	l.mu.Lock()
	l.segments = append(l.segments, seg)
	if n := len(l.segments); old != nil && n >= 2 && l.segments[n-2] == old &&
		old.last != 0 && old.last <= l.released {
		l.segments = append(l.segments[:n-2], seg)
		victims = append(victims, old)
	}
	l.mu.Unlock()

	l.active, l.activeSeg, l.activeOff, l.activeLst = f, seg, 0, 0
	if err := l.deleteSegments(victims); err != nil {
		// Not fatal for appends: the file is released data. Open removes
		// it next time.
		l.logger.Warn("wal: deleting released segment failed", "err", err)
	}
	return nil
}
