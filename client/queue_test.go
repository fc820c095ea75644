package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

var (
	t0       = time.Unix(1700000000, 0)
	ackOK    = Ack{Status: lakehousev1.AckStatus_ACK_STATUS_OK}
	ackDup   = Ack{Status: lakehousev1.AckStatus_ACK_STATUS_DUPLICATE}
	ackPers  = Ack{Status: lakehousev1.AckStatus_ACK_STATUS_PERSISTED}
	errTest  = errors.New("test")
	testSize = 10
)

// pushN pushes n one-entry batches.
func pushN(q *queue, n int) []*batch {
	out := make([]*batch, n)
	for i := range out {
		out[i] = q.push(testEntries(i, 1), testSize, t0.Add(time.Duration(i)*time.Millisecond))
	}
	return out
}

// view describes the queue: "id:seq:state" for every batch held.
func view(q *queue) string {
	s := ""
	for i, b := range q.all() {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:%d:%s", b.id, b.seq, b.state)
	}
	return s
}

func wantView(t *testing.T, q *queue, want string) {
	t.Helper()
	if got := view(q); got != want {
		t.Fatalf("queue %q, want %q", got, want)
	}
}

// sendAll transmits every queued batch in order.
func sendAll(q *queue) {
	for b := q.nextQueued(); b != nil; b = q.nextQueued() {
		q.transmit(b, t0)
	}
}

func TestQueueNumbering(t *testing.T) {
	q := newQueue(10, false)
	q.resync(0) // a new source
	bs := pushN(q, 3)
	wantView(t, q, "1:0:queued 2:0:queued 3:0:queued")
	if !q.transmit(bs[0], t0) || bs[0].attempts != 1 || bs[0].tx != 1 {
		t.Fatalf("first transmission: %+v", bs[0])
	}
	sendAll(q)
	wantView(t, q, "1:1:sent 2:2:sent 3:3:sent")
	if q.sent() != 3 || q.oldestSent() != bs[0] || q.nextQueued() != nil {
		t.Fatal("sent accounting")
	}
	// A resend keeps the number and starts a new transmission.
	q.rewind(bs[1])
	wantView(t, q, "1:1:sent 2:2:queued 3:3:queued")
	if q.transmit(bs[1], t0) || bs[1].seq != 2 || bs[1].attempts != 2 || bs[1].tx != 4 {
		t.Fatalf("resend: %+v", bs[1])
	}
	// Correlation ids find the batch and tell stale transmissions.
	if b, cur := q.lookup(99, "2.4"); b != bs[1] || !cur {
		t.Fatal("lookup of the current transmission")
	}
	if b, cur := q.lookup(0, "2.2"); b != bs[1] || cur {
		t.Fatal("lookup of an earlier transmission")
	}
	if b, cur := q.lookup(3, ""); b != bs[2] || !cur {
		t.Fatal("lookup by number")
	}
	if b, _ := q.lookup(0, "9.1"); b != nil {
		t.Fatal("lookup of an unknown batch")
	}
}

func TestQueueResumeFromServer(t *testing.T) {
	q := newQueue(10, false)
	pushN(q, 2)
	// Connected.last_sequence = 41: numbering continues at 42.
	if r := q.resync(41); len(r.dups) != 0 || r.renumbered || r.lostAcked != 0 {
		t.Fatalf("resync: %+v", r)
	}
	sendAll(q)
	wantView(t, q, "1:42:sent 2:43:sent")
	// The stream breaks; the server got 42 but not 43: 42 is a duplicate,
	// 43 is resent under the same number.
	q.requeueSent()
	r := q.resync(42)
	if len(r.dups) != 1 || r.dups[0].seq != 42 || r.renumbered {
		t.Fatalf("resync: %+v", r)
	}
	if !q.ack(r.dups[0], ackDup) {
		t.Fatal("duplicate not released")
	}
	wantView(t, q, "2:43:queued")
	sendAll(q)
	wantView(t, q, "2:43:sent")
	if q.lastAcked != 42 {
		t.Fatalf("lastAcked %d", q.lastAcked)
	}
}

func TestQueueServerLostBatches(t *testing.T) {
	q := newQueue(10, true) // keeps acked batches until persisted
	q.resync(0)
	bs := pushN(q, 4)
	sendAll(q)
	q.ack(bs[0], ackOK)
	q.ack(bs[1], ackOK)
	wantView(t, q, "1:1:acked 2:2:acked 3:3:sent 4:4:sent")
	// The server comes back with only batch 1 (it lost its log): 2 is
	// resent, and the numbering continues without a gap.
	r := q.resync(1)
	if r.lostAcked != 1 || r.renumbered || len(r.dups) != 0 {
		t.Fatalf("resync: %+v", r)
	}
	wantView(t, q, "1:1:acked 2:2:queued 3:3:queued 4:4:queued")
	// Now it knows nothing of this source: batch 1 is resent too, under
	// the same number, since the server expects 1.
	r = q.resync(0)
	if r.renumbered || r.lostAcked != 1 {
		t.Fatalf("resync: %+v", r)
	}
	sendAll(q)
	wantView(t, q, "1:1:sent 2:2:sent 3:3:sent 4:4:sent")
	// The server has 1..2 but the client holds only 3..4 unnumbered: they
	// are renumbered from 3.
	q2 := newQueue(10, false)
	q2.resync(5)
	b := pushN(q2, 2)
	sendAll(q2)
	wantView(t, q2, "1:6:sent 2:7:sent")
	r = q2.resync(2)
	if !r.renumbered {
		t.Fatalf("resync: %+v", r)
	}
	sendAll(q2)
	if b[0].seq != 3 || b[1].seq != 4 {
		t.Fatalf("renumbered to %d, %d", b[0].seq, b[1].seq)
	}
}

func TestQueueFail(t *testing.T) {
	q := newQueue(10, false)
	q.resync(0)
	bs := pushN(q, 4)
	sendAll(q)
	// Batch 2 is refused for good: 3 and 4 lose their numbers, and the next
	// batch sent gets 2, which the server still expects.
	if !q.fail(bs[1], errTest, true) || bs[1].state != stFailed || bs[1].err != errTest || !bs[1].finished() {
		t.Fatalf("fail: %+v", bs[1])
	}
	wantView(t, q, "1:1:sent 3:0:queued 4:0:queued")
	sendAll(q)
	wantView(t, q, "1:1:sent 3:2:sent 4:3:sent")
	if q.fail(bs[1], errTest, true) {
		t.Fatal("a failed batch failed again")
	}
	// Without renumbering (Close, terminal failure) the others keep theirs.
	q.fail(bs[0], errTest, false)
	wantView(t, q, "3:2:sent 4:3:sent")
	// An acked batch that fails (Close before its watermark) does not
	// renumber: the server has it.
	qp := newQueue(10, true)
	qp.resync(0)
	ps := pushN(qp, 2)
	sendAll(qp)
	qp.ack(ps[0], ackOK)
	qp.fail(ps[0], errTest, true)
	wantView(t, qp, "2:2:sent")
	if ps[0].state != stFailed || ps[0].ack.Status != ackOK.Status || ps[0].err != nil {
		t.Fatal("an acked batch that failed must keep its ack as its outcome")
	}
}

func TestQueueAckAndPersist(t *testing.T) {
	q := newQueue(10, true)
	q.resync(0)
	bs := pushN(q, 4)
	sendAll(q)
	if q.ack(bs[0], ackOK) || bs[0].state != stAcked || !bs[0].finished() {
		t.Fatal("acked batch not kept until persisted")
	}
	if q.ack(bs[0], ackOK) {
		t.Fatal("second ack changed the batch")
	}
	q.ack(bs[1], ackOK)
	if !q.ackedThrough(2) || q.ackedThrough(3) || q.releasedThrough(1) {
		t.Fatal("ackedThrough / releasedThrough")
	}
	// A watermark at 3 releases 1 and 2 and returns 3, not yet acked.
	un := q.persist(3)
	if len(un) != 1 || un[0] != bs[2] {
		t.Fatalf("persist returned %v", un)
	}
	wantView(t, q, "3:3:sent 4:4:sent")
	if bs[0].state != stPersisted || bs[1].state != stPersisted {
		t.Fatal("released batches not persisted")
	}
	if !q.ack(bs[2], ackPers) || bs[2].state != stPersisted {
		t.Fatal("PERSISTED ack did not release")
	}
	// An ack at or below the watermark releases at once.
	q.persist(4)
	if !q.ack(bs[3], ackOK) || bs[3].state != stPersisted || q.len() != 0 || q.entries != 0 {
		t.Fatalf("queue %q, %d entries", view(q), q.entries)
	}
	if !q.releasedThrough(4) {
		t.Fatal("releasedThrough on an empty queue")
	}

	// Without keeping acked batches, an ack releases.
	q = newQueue(10, false)
	q.resync(0)
	b := pushN(q, 1)[0]
	q.transmit(b, t0)
	if !q.ack(b, ackOK) || b.state != stAcked || q.len() != 0 {
		t.Fatal("ack did not release")
	}
	if un := q.persist(1); un != nil {
		t.Fatal("persist returned batches")
	}

	// A PERSISTED ack of a batch already acked releases it.
	q = newQueue(10, true)
	q.resync(0)
	b = pushN(q, 1)[0]
	q.transmit(b, t0)
	q.ack(b, ackOK)
	q.persistAcked(b)
	if b.state != stPersisted || q.len() != 0 {
		t.Fatal("persistAcked")
	}
}

func TestQueueCapacityAndExpiry(t *testing.T) {
	q := newQueue(2, false)
	q.resync(0)
	bs := pushN(q, 2) // sealed at t0 and t0+1ms
	if q.hasRoom() || q.lastID() != 2 || q.entries != 2 {
		t.Fatal("capacity")
	}
	q.transmit(bs[0], t0)
	if got := q.expired(t0.Add(time.Millisecond)); len(got) != 1 || got[0] != bs[1] {
		t.Fatalf("expired (sent batches excluded): %v", got)
	}
	q.requeueSent()
	if got := q.expired(t0); len(got) != 1 || got[0] != bs[0] {
		t.Fatalf("expired: %v", got)
	}
	q.ack(bs[0], ackOK)
	if !q.hasRoom() {
		t.Fatal("no room after an ack")
	}
}

func TestQueueTransmitOnlyQueued(t *testing.T) {
	q := newQueue(2, false)
	q.resync(0)
	b := pushN(q, 1)[0]
	q.transmit(b, t0)
	defer func() {
		if recover() == nil {
			t.Fatal("transmit of a sent batch did not panic")
		}
	}()
	q.transmit(b, t0)
}
