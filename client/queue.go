package client

import (
	"slices"
	"strconv"
	"strings"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// batchState is where a sealed batch is in its life. The queue makes every
// transition:
//
//	queued ──transmit──► sent ──ack──► acked ──persist──► persisted
//	  ▲                   │
//	  └─rewind/requeueSent┘
//	queued, sent, acked ──fail──► failed
//
// A batch leaves the queue (is released) when it is persisted or failed, or
// when it is acked and the queue does not keep acked batches (the client is
// not waiting for persisted watermarks).
type batchState uint8

const (
	stQueued    batchState = iota // waiting to be (re)sent
	stSent                        // sent on the current stream, no answer yet
	stAcked                       // acknowledged by the server
	stPersisted                   // covered by a Persisted watermark (released)
	stFailed                      // given up on (released)
)

func (s batchState) String() string {
	switch s {
	case stQueued:
		return "queued"
	case stSent:
		return "sent"
	case stAcked:
		return "acked"
	case stPersisted:
		return "persisted"
	case stFailed:
		return "failed"
	}
	return "batchState(" + strconv.Itoa(int(s)) + ")"
}

// batch is a sealed batch held until it is released.
type batch struct {
	id         uint64 // client-wide, in seal order; part of the correlation id
	seq        uint64 // batch number; 0 until first sent (or after a renumbering)
	entries    []Entry
	nbytes     int       // sum of the entries' encoded sizes
	ts         int64     // ms since the Unix epoch, when sealed (the batch timestamp)
	sealed     time.Time // when sealed, for the delivery timeout
	state      batchState
	tx         uint64 // current transmission (queue-wide counter), in the correlation id
	attempts   int    // transmissions
	failures   int    // failures counted against the retry limit
	lastReason lakehousev1.NackReason
	firstSent  time.Time
	lastSent   time.Time
	lastSize   int // encoded size of the last transmission

	done chan struct{} // closed once acked or failed, whichever comes first
	ack  Ack           // set before done is closed (acked)
	err  error         // set before done is closed (failed before any ack)
}

// finished reports whether done was closed.
func (b *batch) finished() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

func (b *batch) finish() {
	if !b.finished() {
		close(b.done)
	}
}

// queue owns the pending batches of a client: their order, their states and
// their numbering. Batch numbers are given at the first transmission (1, 2,
// 3... per source, continuing from the server's last accepted number), kept
// for every resend, and given again only when the server cannot accept them
// any more (a batch before them failed, or the server lost batches). A queue
// is not safe for concurrent use: the client's mutex guards it.
type queue struct {
	batches   []*batch // in seal order; queued, sent or acked
	max       int      // capacity (sealed batches held)
	keepAcked bool     // hold acked batches until persisted
	entries   int      // entries of the batches held

	nextID    uint64 // id of the next batch pushed
	nextSeq   uint64 // number of the next batch numbered
	tx        uint64 // last transmission number
	lastAcked uint64 // highest number acked
	persisted uint64 // highest Persisted watermark
}

func newQueue(max int, keepAcked bool) *queue {
	return &queue{max: max, keepAcked: keepAcked, nextID: 1, nextSeq: 1}
}

// len returns the number of batches held.
func (q *queue) len() int { return len(q.batches) }

// hasRoom reports whether a batch may be pushed without exceeding capacity.
func (q *queue) hasRoom() bool { return len(q.batches) < q.max }

// resendFrom is the lowest batch number held although acked (0: none): a
// queue that keeps acked batches until persisted can resend everything
// above the persisted watermark. An instance taking the source over from a
// dead one relies on it (ConnectRequest.resend_from_sequence).
func (q *queue) resendFrom() uint64 {
	if !q.keepAcked {
		return 0
	}
	return q.persisted + 1
}

// lastID returns the id of the newest batch pushed (0: none yet).
func (q *queue) lastID() uint64 { return q.nextID - 1 }

// push adds a queued batch of entries (nbytes: their encoded size), sealed now.
func (q *queue) push(entries []Entry, nbytes int, now time.Time) *batch {
	b := &batch{
		id:      q.nextID,
		entries: entries,
		nbytes:  nbytes,
		ts:      now.UnixMilli(),
		sealed:  now,
		done:    make(chan struct{}),
	}
	q.nextID++
	q.batches = append(q.batches, b)
	q.entries += len(entries)
	return b
}

// nextQueued returns the oldest queued batch, or nil.
func (q *queue) nextQueued() *batch {
	for _, b := range q.batches {
		if b.state == stQueued {
			return b
		}
	}
	return nil
}

// oldestSent returns the oldest batch in flight, or nil.
func (q *queue) oldestSent() *batch {
	for _, b := range q.batches {
		if b.state == stSent {
			return b
		}
	}
	return nil
}

// sent returns the number of batches in flight.
func (q *queue) sent() int {
	n := 0
	for _, b := range q.batches {
		if b.state == stSent {
			n++
		}
	}
	return n
}

// transmit moves the queued batch b to sent: it numbers b if it has no
// number, and starts a new transmission. first reports b's first
// transmission.
func (q *queue) transmit(b *batch, now time.Time) (first bool) {
	if b.state != stQueued {
		panic("client: transmit of a " + b.state.String() + " batch")
	}
	if b.seq == 0 {
		b.seq = q.nextSeq
		q.nextSeq++
	}
	q.tx++
	b.tx = q.tx
	b.attempts++
	b.state = stSent
	b.lastSent = now
	if b.attempts == 1 {
		b.firstSent = now
		return true
	}
	return false
}

// lookup finds the batch an ack or nack is about: by the batch id in the
// correlation id when there is one, else by number. current says whether the
// answer is about the batch's current transmission.
func (q *queue) lookup(seq uint64, corr string) (b *batch, current bool) {
	if id, tx, ok := parseCorr(corr); ok {
		for _, p := range q.batches {
			if p.id == id {
				return p, p.tx == tx
			}
		}
		return nil, false
	}
	if seq == 0 {
		return nil, false
	}
	for _, p := range q.batches {
		if p.seq == seq {
			return p, true
		}
	}
	return nil, false
}

// ack moves b (queued or sent) to acked and completes it with a. b is
// released unless the queue keeps acked batches and b is not persisted yet
// (a.Status PERSISTED, or a number at or below the persisted watermark). It
// reports whether b was released.
func (q *queue) ack(b *batch, a Ack) (released bool) {
	if b.state != stQueued && b.state != stSent {
		return false
	}
	b.ack = a
	b.state = stAcked
	b.finish()
	q.lastAcked = max(q.lastAcked, b.seq)
	persisted := a.Status == lakehousev1.AckStatus_ACK_STATUS_PERSISTED || (b.seq != 0 && b.seq <= q.persisted)
	switch {
	case persisted:
		b.state = stPersisted
	case q.keepAcked:
		return false
	}
	q.remove(b)
	return true
}

// isPersisted reports whether b's number is covered by the persisted watermark.
func (q *queue) isPersisted(b *batch) bool { return b.seq != 0 && b.seq <= q.persisted }

// persistAcked releases the acked batch b as persisted (a PERSISTED ack for a
// batch already acked).
func (q *queue) persistAcked(b *batch) {
	if b.state == stAcked && q.remove(b) {
		b.state = stPersisted
	}
}

// persist raises the persisted watermark to seq. When the queue keeps acked
// batches, it releases those the watermark covers, and returns the covered
// batches that were not acked yet (the caller acks them, which releases
// them).
func (q *queue) persist(seq uint64) (unacked []*batch) {
	q.persisted = max(q.persisted, seq)
	if !q.keepAcked {
		return nil
	}
	kept := q.batches[:0]
	for _, b := range q.batches {
		switch {
		case !q.isPersisted(b):
			kept = append(kept, b)
		case b.state == stAcked:
			b.state = stPersisted
			q.entries -= len(b.entries)
		default:
			unacked = append(unacked, b)
			kept = append(kept, b)
		}
	}
	clear(q.batches[len(kept):])
	q.batches = kept
	return unacked
}

// rewind queues b and every later batch in flight for resending: the server
// refuses what follows a refused batch.
func (q *queue) rewind(b *batch) {
	i := q.index(b)
	if i < 0 {
		return
	}
	for _, p := range q.batches[i:] {
		if p.state == stSent {
			p.state = stQueued
		}
	}
}

// requeueSent queues every batch in flight (the stream ended).
func (q *queue) requeueSent() {
	for _, b := range q.batches {
		if b.state == stSent {
			b.state = stQueued
		}
	}
}

// fail releases b as failed, completing it with err unless it was acked.
// With renumber, and if
// the server may not have accepted b (it had a number and was not acked),
// the later unaccepted batches lose their numbers: the server still expects
// b's number, which the next batch sent gets. It reports whether b was held.
func (q *queue) fail(b *batch, err error, renumber bool) bool {
	i := q.index(b)
	if i < 0 {
		return false
	}
	wasAcked := b.state == stAcked
	q.remove(b)
	b.state = stFailed
	if !b.finished() { // an acked batch keeps its outcome (a waiter may be reading it)
		b.err = err
		b.finish()
	}
	if renumber && b.seq != 0 && !wasAcked {
		for _, p := range q.batches[i:] {
			if p.state != stAcked && p.seq > b.seq {
				p.seq = 0
				p.state = stQueued
			}
		}
		q.nextSeq = b.seq
	}
	return true
}

// resyncResult says what resync found.
type resyncResult struct {
	dups       []*batch // numbered at or below the server's last, not acked: the server has them
	lostAcked  int      // acked batches the server lacks (queued again)
	renumbered bool     // the server lacks batches the queue no longer holds
	// lostFrom..lostTo are the acked batch numbers the server lacks and the
	// queue no longer holds (0, 0: none).
	lostFrom, lostTo uint64
	behind           bool // nothing numbered is held and the server is behind the last number given
}

// resync aligns the queue with last, the server's last accepted batch number
// (Connected.last_sequence, or expected_sequence-1 of a nack). Batches at or
// below last are the server's: they are returned as dups, and the caller acks
// them (as DUPLICATE). Every other batch is queued for sending, the next
// number given is last+1, and when the server lacks batches the queue no
// longer holds (it lost acknowledged data), the unaccepted batches are
// renumbered from last+1 rather than leaving a gap the server would refuse
// forever.
func (q *queue) resync(last uint64) resyncResult {
	var r resyncResult
	var lowest uint64
	for _, b := range q.batches {
		if b.seq != 0 && b.seq <= last {
			if b.state != stAcked {
				r.dups = append(r.dups, b)
			}
			continue
		}
		if b.state == stAcked {
			r.lostAcked++
		}
		b.state = stQueued
		if b.seq != 0 && (lowest == 0 || b.seq < lowest) {
			lowest = b.seq
		}
	}
	switch {
	case lowest == 0:
		r.behind = q.nextSeq > last+1
		if r.behind {
			r.lostFrom, r.lostTo = last+1, q.nextSeq-1
		}
		q.nextSeq = last + 1
	case lowest != last+1:
		r.renumbered = true
		if lowest > last+1 {
			r.lostFrom, r.lostTo = last+1, lowest-1
		}
		for _, b := range q.batches {
			if b.seq > last {
				b.seq = 0
			}
		}
		q.nextSeq = last + 1
	}
	return r
}

// expired returns the queued batches sealed at or before deadline, oldest
// first.
func (q *queue) expired(deadline time.Time) []*batch {
	var out []*batch
	for _, b := range q.batches {
		if b.state == stQueued && !b.sealed.After(deadline) {
			out = append(out, b)
		}
	}
	return out
}

// ackedThrough reports whether every batch held with an id up to id is acked.
func (q *queue) ackedThrough(id uint64) bool {
	for _, b := range q.batches {
		if b.id <= id && b.state != stAcked {
			return false
		}
	}
	return true
}

// releasedThrough reports whether every batch with an id up to id was released.
func (q *queue) releasedThrough(id uint64) bool {
	return len(q.batches) == 0 || q.batches[0].id > id
}

// all returns the batches held, oldest first (read only).
func (q *queue) all() []*batch { return q.batches }

func (q *queue) index(b *batch) int {
	for i, p := range q.batches {
		if p == b {
			return i
		}
	}
	return -1
}

func (q *queue) remove(b *batch) bool {
	i := q.index(b)
	if i < 0 {
		return false
	}
	q.batches = slices.Delete(q.batches, i, i+1)
	q.entries -= len(b.entries)
	return true
}

// Correlation ids are "<batch id>.<transmission>".
func appendCorr(dst []byte, id, tx uint64) []byte {
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, tx, 10)
}

func parseCorr(s string) (id, tx uint64, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found {
		return 0, 0, false
	}
	id, err1 := strconv.ParseUint(a, 10, 64)
	tx, err2 := strconv.ParseUint(b, 10, 64)
	return id, tx, err1 == nil && err2 == nil
}
