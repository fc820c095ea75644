package server

import (
	"sync"

	"github.com/dot-do/lakehouse-rpc/server/wal"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// bufBatch is one accepted batch held until committed.
type bufBatch struct {
	src   *source
	shard string
	seq   uint64
	lsn   wal.LSN
	// frame is the cdc_batch frame, decoded again (zero-copy) at flush
	// time. It is nil for a queued batch held only in the write-ahead log
	// (the memory budget was full), which the flusher reads back at lsn,
	// and for a staged batch.
	frame     []byte
	entries   int
	size      int64
	arrivedMs int64
	lastEntry uint64
	// firstEntry is the lowest entry sequence; with lastEntry the span a
	// commit of an entry-mode batch records in the lease row (entryranges.go).
	firstEntry uint64
	entryMode  bool   // the source sent it in SEQUENCE_MODE_ENTRY
	epoch      uint64 // the source's lease epoch at accept (lease.go); 0 without coordination
}

// buffer holds accepted batches from the moment their write-ahead log append
// is queued until they are committed, and is the only code that changes their
// lists and counters. A batch moves through it as
//
//	reserve -> add (queued) -> take (in flight) -> release (committed)
//	                                            -> putBack (queued again, at the front)
//	                                            -> stage (staged) -> releaseStaged (committed)
//
// Memory is bounded, the log is not: a queued batch keeps its frame in memory
// while the frames queued and in flight fit in maxMem, and is otherwise held
// only in the log (the log absorbs a storage outage, not memory; its cap is
// what refuses batches). take hands the flusher at most maxTake bytes at a
// time, and the flusher reads the frames of those held only in the log back
// (readBack), so memory stays within maxMem plus one flush.
//
// Its mutex is a leaf: nothing else is locked while it is held (lastLSN
// reads the log's counters), so the server may call it with Server.mu held.
type buffer struct {
	maxMem  int64          // the memory budget (Config.MaxBufferBytes)
	maxTake int64          // the most one take hands out (Config.FlushBytes), one batch at least
	lastLSN func() wal.LSN // the log's last durable LSN

	mu       sync.Mutex
	queued   []*bufBatch // accepted, durable, not yet handed to the sink; arrival order
	qBytes   int64       // frame bytes of the queued batches, in memory or not
	qEntries int
	qMem     int64 // frame bytes of the queued batches held in memory
	qLogOnly int   // queued batches held only in the log
	// inflBytes counts every in-flight frame as in memory: the flusher
	// reads back those held only in the log.
	inflight    []*bufBatch // taken by the flusher, being staged or committed
	inflBytes   int64
	inflEntries int
	reserved    int64           // bytes of batches being appended to the log
	appending   map[wal.LSN]int // lower bounds of the LSNs of appends in progress
	// staged are batches whose data files the sink has written (their frames
	// dropped) and that wait for the next commit; stagedSets are the sink's
	// handles for them.
	staged        []*bufBatch
	stagedSets    []sink.Staged
	stagedBytes   int64 // bytes of the staged data files, as the sink reports them
	stagedFrames  int64 // frame bytes of the staged batches: what their commit releases of the log
	stagedEntries int
}

func newBuffer(maxMem, maxTake int64, lastLSN func() wal.LSN) *buffer {
	return &buffer{maxMem: maxMem, maxTake: maxTake, lastLSN: lastLSN, appending: make(map[wal.LSN]int)}
}

// bufferStats is a snapshot of the buffer's counters.
type bufferStats struct {
	queuedBatches, inflBatches, stagedBatches int
	queuedBytes, inflBytes, reserved          int64
	queuedMem                                 int64 // of queuedBytes, held in memory
	logOnlyBatches                            int   // queued batches held only in the log
	queuedEntries, inflEntries, stagedEntries int
	stagedBytes, stagedFrames                 int64
	oldestMs, newestMs                        int64 // arrival times among queued and in-flight batches; 0 if none
	// utilization is the share of the memory budget in use. It reaches 1
	// when batches go to the log only; acks then say buffered (slow down).
	utilization float64
}

// memBytes is what the buffer holds in memory, a running flush included.
func (st bufferStats) memBytes() int64 { return st.queuedMem + st.inflBytes }

// reserve registers a batch about to be appended: its frame is in memory
// until add, and a lower bound of its LSN keeps the log from being released
// past a batch not yet in the buffer. Memory never refuses a batch (the log
// holds what memory cannot).
func (b *buffer) reserve(size int64) (lower wal.LSN) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved += size
	lower = b.lastLSN() + 1
	b.appending[lower]++
	return lower
}

// unreserve gives back a reservation whose append failed.
func (b *buffer) unreserve(size int64, lower wal.LSN) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= size
	b.endAppendLocked(lower)
}

func (b *buffer) endAppendLocked(lower wal.LSN) {
	if b.appending[lower]--; b.appending[lower] <= 0 {
		delete(b.appending, lower)
	}
}

// add queues a batch whose append is durable, ending its reservation.
func (b *buffer) add(bb *bufBatch, lower wal.LSN) bufferStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved -= bb.size
	b.endAppendLocked(lower)
	b.queueLocked(bb)
	return b.statsLocked(false)
}

// restore queues a batch replayed from the log at start. Its frame is the
// replay's (reused) buffer: it is copied if it stays in memory.
func (b *buffer) restore(bb *bufBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fitsLocked(bb.size) {
		bb.frame = append([]byte(nil), bb.frame...)
	}
	b.queueLocked(bb)
}

// fitsLocked reports whether a frame of size bytes may stay in memory.
func (b *buffer) fitsLocked(size int64) bool {
	return b.qMem+b.inflBytes+size <= b.maxMem
}

// queueLocked queues bb at the back, dropping its frame unless it fits.
func (b *buffer) queueLocked(bb *bufBatch) {
	if !b.fitsLocked(bb.size) {
		bb.frame = nil
	}
	if bb.frame != nil {
		b.qMem += bb.size
	} else {
		b.qLogOnly++
	}
	b.queued = append(b.queued, bb)
	b.qBytes += bb.size
	b.qEntries += bb.entries
}

// take moves the oldest queued batches to the in-flight list, at most
// maxBatches of them and maxTake bytes (one batch at least), and returns
// them with their entry count. Those held only in the log have no frame:
// the caller reads them back.
func (b *buffer) take(maxBatches int) ([]*bufBatch, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, bytes, entries, mem, logOnly := 0, int64(0), 0, int64(0), 0
	for _, bb := range b.queued {
		if n == maxBatches || (n > 0 && bytes+bb.size > b.maxTake) {
			break
		}
		n++
		bytes += bb.size
		entries += bb.entries
		if bb.frame != nil {
			mem += bb.size
		} else {
			logOnly++
		}
	}
	batches := b.queued[:n:n]
	b.queued = b.queued[n:]
	if len(b.queued) == 0 {
		b.queued = nil // let the backing array go
	}
	b.inflight = batches
	b.inflBytes, b.inflEntries = bytes, entries
	b.qBytes -= bytes
	b.qEntries -= entries
	b.qMem -= mem
	b.qLogOnly -= logOnly
	return batches, entries
}

// putBack returns the in-flight batches to the front of the queue, after a
// failed flush: they are still in the log. Frames that no longer fit in
// memory (those read back from the log, for example) are dropped again.
func (b *buffer) putBack() {
	b.mu.Lock()
	defer b.mu.Unlock()
	infl := b.inflight
	b.clearInflightLocked()
	for _, bb := range infl {
		if bb.frame != nil && b.fitsLocked(bb.size) {
			b.qMem += bb.size
		} else {
			bb.frame = nil
			b.qLogOnly++
		}
		b.qBytes += bb.size
		b.qEntries += bb.entries
	}
	b.queued = append(infl, b.queued...)
}

// release drops the in-flight batches: they are committed (or there were
// none).
func (b *buffer) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clearInflightLocked()
}

func (b *buffer) clearInflightLocked() {
	b.inflight, b.inflBytes, b.inflEntries = nil, 0, 0
}

// stage moves the in-flight batches to the staged list, with the sink's
// handle for their data files, and drops their frames: the data files hold
// the rows now and the log keeps the frames.
func (b *buffer) stage(st sink.Staged) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bb := range b.inflight {
		bb.frame = nil
	}
	b.staged = append(b.staged, b.inflight...)
	b.stagedSets = append(b.stagedSets, st)
	b.stagedBytes += st.StagedBytes()
	b.stagedFrames += b.inflBytes
	b.stagedEntries += b.inflEntries
	b.clearInflightLocked()
}

// stagedSnapshot returns the staged batches and their handles, with their
// entry count. Only the flusher stages and commits, so they stay staged
// until it calls releaseStaged.
func (b *buffer) stagedSnapshot() ([]*bufBatch, []sink.Staged, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.staged, b.stagedSets, b.stagedEntries
}

// releaseStaged drops the staged batches: they are committed.
func (b *buffer) releaseStaged() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged, b.stagedSets, b.stagedBytes, b.stagedFrames, b.stagedEntries = nil, nil, 0, 0, 0
}

// stats returns the counters; withTimes also scans the arrival times.
func (b *buffer) stats(withTimes bool) bufferStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statsLocked(withTimes)
}

func (b *buffer) statsLocked(withTimes bool) bufferStats {
	st := bufferStats{
		queuedBatches: len(b.queued), inflBatches: len(b.inflight), stagedBatches: len(b.staged),
		queuedBytes: b.qBytes, inflBytes: b.inflBytes, reserved: b.reserved, queuedMem: b.qMem,
		logOnlyBatches: b.qLogOnly,
		queuedEntries:  b.qEntries, inflEntries: b.inflEntries, stagedEntries: b.stagedEntries,
		stagedBytes: b.stagedBytes, stagedFrames: b.stagedFrames,
	}
	st.utilization = float64(b.qMem+b.inflBytes+b.reserved) / float64(b.maxMem)
	if withTimes {
		for _, list := range [][]*bufBatch{b.inflight, b.queued} {
			for _, bb := range list {
				if st.oldestMs == 0 || bb.arrivedMs < st.oldestMs {
					st.oldestMs = bb.arrivedMs
				}
				st.newestMs = max(st.newestMs, bb.arrivedMs)
			}
		}
	}
	return st
}

// oldestQueuedMs is the arrival time of the oldest queued batch, 0 if none.
func (b *buffer) oldestQueuedMs() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queued) == 0 {
		return 0
	}
	return b.queued[0].arrivedMs
}

// releasePoint is the highest LSN such that every record at or below it is
// committed: one below the lowest LSN still queued, in flight, staged or
// being appended; or the log's last LSN when there is none.
func (b *buffer) releasePoint() wal.LSN {
	b.mu.Lock()
	defer b.mu.Unlock()
	low := b.lastLSN() + 1
	for _, list := range [][]*bufBatch{b.queued, b.inflight, b.staged} {
		for _, bb := range list {
			low = min(low, bb.lsn)
		}
	}
	for l := range b.appending {
		low = min(low, l)
	}
	return low - 1
}
