package server

import (
	"sync"

	"github.com/dot-do/lakehouse-rpc/server/wal"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// bufBatch is one accepted batch held until committed.
type bufBatch struct {
	src       *source
	shard     string
	seq       uint64
	lsn       wal.LSN
	frame     []byte // the cdc_batch frame; decoded again (zero-copy) at flush time
	entries   int
	size      int64
	arrivedMs int64
	lastEntry uint64
}

// buffer holds accepted batches from the moment their write-ahead log append
// is queued until they are committed, and is the only code that changes their
// lists and counters. A batch moves through it as
//
//	reserve -> add (queued) -> take (in flight) -> release (committed)
//	                                            -> putBack (queued again, at the front)
//	                                            -> stage (staged) -> releaseStaged (committed)
//
// Its mutex is a leaf: nothing else is locked while it is held (lastLSN
// reads the log's counters), so the server may call it with Server.mu held.
type buffer struct {
	maxMem  int64          // the memory budget (Config.MaxBufferBytes)
	lastLSN func() wal.LSN // the log's last durable LSN

	mu          sync.Mutex
	queued      []*bufBatch // accepted, durable, not yet handed to the sink; arrival order
	qBytes      int64
	qEntries    int
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
	stagedEntries int
}

func newBuffer(maxMem int64, lastLSN func() wal.LSN) *buffer {
	return &buffer{maxMem: maxMem, lastLSN: lastLSN, appending: make(map[wal.LSN]int)}
}

// bufferStats is a snapshot of the buffer's counters.
type bufferStats struct {
	queuedBatches, inflBatches, stagedBatches int
	queuedBytes, inflBytes, reserved          int64
	queuedEntries, inflEntries, stagedEntries int
	stagedBytes                               int64
	oldestMs, newestMs                        int64 // arrival times among queued and in-flight batches; 0 if none
	utilization                               float64
}

// memBytes is what the buffer holds in memory, a running flush included.
func (st bufferStats) memBytes() int64 { return st.queuedBytes + st.inflBytes }

// reserve claims size bytes of the memory budget for a batch about to be
// appended, and registers a lower bound of its LSN so that the log is never
// released past a batch not yet in the buffer. It fails when the budget is
// exhausted.
func (b *buffer) reserve(size int64) (lower wal.LSN, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.qBytes+b.inflBytes+b.reserved+size > b.maxMem {
		return 0, false
	}
	b.reserved += size
	lower = b.lastLSN() + 1
	b.appending[lower]++
	return lower, true
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

// restore queues a batch replayed from the log at start.
func (b *buffer) restore(bb *bufBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queueLocked(bb)
}

func (b *buffer) queueLocked(bb *bufBatch) {
	b.queued = append(b.queued, bb)
	b.qBytes += bb.size
	b.qEntries += bb.entries
}

// take moves every queued batch to the in-flight list and returns it, with
// its entry count.
func (b *buffer) take() ([]*bufBatch, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	batches := b.queued
	b.queued = nil
	b.inflight = batches
	b.inflBytes, b.inflEntries = b.qBytes, b.qEntries
	b.qBytes, b.qEntries = 0, 0
	return batches, b.inflEntries
}

// putBack returns the in-flight batches to the front of the queue, after a
// failed flush: they are still in the log.
func (b *buffer) putBack() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queued = append(b.inflight, b.queued...)
	b.qBytes += b.inflBytes
	b.qEntries += b.inflEntries
	b.clearInflightLocked()
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
	b.staged, b.stagedSets, b.stagedBytes, b.stagedEntries = nil, nil, 0, 0
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
		queuedBytes: b.qBytes, inflBytes: b.inflBytes, reserved: b.reserved,
		queuedEntries: b.qEntries, inflEntries: b.inflEntries, stagedEntries: b.stagedEntries,
		stagedBytes: b.stagedBytes,
	}
	st.utilization = float64(b.qBytes+b.inflBytes+b.reserved) / float64(b.maxMem)
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
