package server

// Buffer operations of multi-instance mode (lease.go).

// eachQueued calls f with every queued batch (at start, after the replay).
func (b *buffer) eachQueued(f func(*bufBatch)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bb := range b.queued {
		f(bb)
	}
}

// dropInflight keeps the in-flight batches for which keep is true and drops
// the others: they will never be committed here. It returns the kept ones
// and how many were dropped.
func (b *buffer) dropInflight(keep func(*bufBatch) bool) ([]*bufBatch, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.inflight[:0:0]
	for _, bb := range b.inflight {
		if keep(bb) {
			kept = append(kept, bb)
			continue
		}
		b.inflBytes -= bb.size
		b.inflEntries -= bb.entries
	}
	dropped := len(b.inflight) - len(kept)
	b.inflight = kept
	return kept, dropped
}

// unstage queues every staged batch again, at the front and held only in
// the log, and forgets the staged data files (orphans for maintenance): a
// commit of them was fenced, and the next flush stages again those still
// this instance's.
func (b *buffer) unstage() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bb := range b.staged {
		bb.frame = nil
		b.qLogOnly++
		b.qBytes += bb.size
		b.qEntries += bb.entries
	}
	b.queued = append(b.staged, b.queued...)
	b.staged, b.stagedSets, b.stagedBytes, b.stagedEntries = nil, nil, 0, 0
}
