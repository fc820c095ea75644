package server

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dot-do/lakehouse-rpc/server/wal"
)

type fakeStaged struct{ bytes int64 }

func (f fakeStaged) StagedRows() int64  { return f.bytes }
func (f fakeStaged) StagedBytes() int64 { return f.bytes }

// testBuffer is a buffer over a pretend log whose LSNs the test hands out.
type testBuffer struct {
	*buffer
	last wal.LSN
	src  *source
}

func newTestBuffer(maxMem, maxTake int64) *testBuffer {
	tb := &testBuffer{src: &source{id: "s"}}
	tb.buffer = newBuffer(maxMem, maxTake, func() wal.LSN { return tb.last })
	return tb
}

// append runs one batch of size bytes through reserve and add.
func (tb *testBuffer) append(size int64) *bufBatch {
	lower := tb.reserve(size)
	tb.last++
	bb := &bufBatch{src: tb.src, seq: uint64(tb.last), lsn: tb.last, frame: make([]byte, size), entries: 1, size: size}
	tb.add(bb, lower)
	return bb
}

// check recomputes every counter from the lists.
func (tb *testBuffer) check(t *testing.T) {
	t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var qb, qm, ib int64
	var qe, ie, lo, se int
	for _, b := range tb.queued {
		qb += b.size
		qe += b.entries
		if b.frame != nil {
			qm += b.size
		} else {
			lo++
		}
	}
	for _, b := range tb.inflight {
		ib += b.size
		ie += b.entries
	}
	for _, b := range tb.staged {
		se += b.entries
		if b.frame != nil {
			t.Fatalf("staged batch %d kept its frame", b.seq)
		}
	}
	if qb != tb.qBytes || qm != tb.qMem || qe != tb.qEntries || lo != tb.qLogOnly || ib != tb.inflBytes || ie != tb.inflEntries || se != tb.stagedEntries {
		t.Fatalf("counters %d/%d/%d/%d/%d/%d/%d, lists say %d/%d/%d/%d/%d/%d/%d",
			tb.qBytes, tb.qMem, tb.qEntries, tb.qLogOnly, tb.inflBytes, tb.inflEntries, tb.stagedEntries,
			qb, qm, qe, lo, ib, ie, se)
	}
	if tb.qMem > tb.maxMem {
		t.Fatalf("%d queued bytes in memory, cap %d", tb.qMem, tb.maxMem)
	}
	if tb.qMem+tb.inflBytes > tb.maxMem+tb.maxTake {
		t.Fatalf("%d bytes in memory with a flush running, cap %d + one flush %d", tb.qMem+tb.inflBytes, tb.maxMem, tb.maxTake)
	}
}

func TestBufferHoldsBeyondMemoryInTheLog(t *testing.T) {
	tb := newTestBuffer(100, 50)
	var bs []*bufBatch
	for range 6 {
		bs = append(bs, tb.append(30))
	}
	tb.check(t)
	st := tb.stats(false)
	if st.queuedBytes != 180 || st.queuedMem != 90 || st.logOnlyBatches != 3 || st.queuedBatches != 6 {
		t.Fatalf("stats %+v: want 180 bytes queued, 90 in memory, 3 batches in the log only", st)
	}
	if bs[2].frame == nil || bs[3].frame != nil {
		t.Fatal("the batches beyond the memory cap should have dropped their frames, the others not")
	}
	if st.utilization != 0.9 {
		t.Errorf("utilization %v, want 0.9 (memory only)", st.utilization)
	}
	// One flush's size at a time, one batch at least.
	got, entries := tb.take(math.MaxInt)
	if len(got) != 1 || entries != 1 || got[0] != bs[0] {
		t.Fatalf("took %d batches, want the oldest one (50 bytes a take)", len(got))
	}
	tb.check(t)
	// The running flush's 30 bytes still count: 60 + 30 + 10 fits.
	nb := tb.append(10)
	if nb.frame == nil {
		t.Error("a batch that fits was dropped to the log")
	}
	tb.putBack()
	tb.check(t)
	if tb.stats(false).queuedBatches != 7 || tb.queued[0] != bs[0] {
		t.Fatal("putBack did not return the batch to the front")
	}
	// A take of several, and a take of batches held only in the log: all
	// count as memory while in flight (the flusher reads them back).
	tb.take(1)
	tb.release()
	tb.take(1)
	tb.release()
	tb.take(1)
	tb.release()
	got, _ = tb.take(math.MaxInt)
	if len(got) != 1 || got[0].frame != nil {
		t.Fatalf("want one batch held only in the log, got %d", len(got))
	}
	if st := tb.stats(false); st.inflBytes != 30 {
		t.Errorf("in flight %d bytes, want 30", st.inflBytes)
	}
	got[0].frame = make([]byte, 30) // read back
	tb.stage(fakeStaged{7})
	tb.check(t)
	if st := tb.stats(false); st.stagedBatches != 1 || st.stagedBytes != 7 || st.inflBytes != 0 {
		t.Errorf("after stage: %+v", st)
	}
}

func TestBufferReleasePoint(t *testing.T) {
	tb := newTestBuffer(1<<20, 1<<20)
	if p := tb.releasePoint(); p != 0 {
		t.Fatalf("empty log: release point %d", p)
	}
	tb.append(10) // LSN 1
	tb.append(10) // LSN 2
	if p := tb.releasePoint(); p != 0 {
		t.Fatalf("release point %d with LSN 1 queued", p)
	}
	lower := tb.reserve(10) // an append in progress, LSN 3 at least
	tb.take(math.MaxInt)
	tb.release()
	if p := tb.releasePoint(); p != 2 {
		t.Fatalf("release point %d, want 2 (LSN 3 being appended)", p)
	}
	tb.unreserve(10, lower)
	if p := tb.releasePoint(); p != 2 {
		t.Fatalf("release point %d, want 2 (all committed)", p)
	}
	tb.append(10) // LSN 3
	tb.take(math.MaxInt)
	tb.stage(fakeStaged{1})
	if p := tb.releasePoint(); p != 2 {
		t.Fatalf("release point %d with LSN 3 staged", p)
	}
	tb.releaseStaged()
	if p := tb.releasePoint(); p != 3 {
		t.Fatalf("release point %d, want 3", p)
	}
}

// TestBufferRandomOps runs random sequences of operations and checks every
// counter and the memory bound after each.
func TestBufferRandomOps(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		tb := newTestBuffer(1000, 300)
		for range 500 {
			switch op := r.IntN(10); {
			case op < 5:
				tb.append(int64(1 + r.IntN(200)))
			case op < 7 && tb.inflight == nil:
				got, _ := tb.take(1 + r.IntN(10))
				for _, b := range got {
					if b.frame == nil {
						b.frame = make([]byte, b.size) // the flusher reads it back
					}
				}
			case op == 7 && tb.inflight != nil:
				tb.putBack()
			case op == 8 && tb.inflight != nil:
				tb.stage(fakeStaged{1})
			case op == 9:
				if tb.inflight != nil {
					tb.release()
				} else {
					tb.releaseStaged()
				}
			}
			tb.check(t)
		}
	}
}
