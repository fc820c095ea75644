package server_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// coordInstance starts a server coordinated through the lease table in
// dsn's database as instance owner (lease TTL 1 s, no orphan wait: a dead
// instance's sources move at expiry, as with a child behind serve's built-in
// bridge, which carries no acked entry). Commits happen only on request.
func coordInstance(t *testing.T, dsn, owner string) *servertest.Instance {
	t.Helper()
	return coordInstanceWith(t, dsn, owner, func(st *coord.Store) server.Coordinator { return st })
}

// coordInstanceWith is coordInstance with the lease store wrapped.
func coordInstanceWith(t *testing.T, dsn, owner string, wrap func(*coord.Store) server.Coordinator) *servertest.Instance {
	t.Helper()
	st, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: owner, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Coordinator = wrap(st)
		c.FlushInterval = time.Hour
	}))
}

// failingMarks fails the first n MarkCommitted calls, as when PostgreSQL
// does not answer right after a commit.
type failingMarks struct {
	*coord.Store
	n atomic.Int32
}

func (f *failingMarks) MarkCommitted(ctx context.Context, marks []coord.Mark, keep coord.Window) (map[string]bool, error) {
	if f.n.Add(-1) >= 0 {
		return nil, errors.New("injected: lease store unreachable")
	}
	return f.Store.MarkCommitted(ctx, marks, keep)
}

// entryStream connects source to in in entry mode (a legacy child's
// stream), retrying while another instance's lease on it lives.
func entryStream(t *testing.T, in *servertest.Instance, source string) *testStream {
	t.Helper()
	return coordStream(t, in, source, lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
}

// coordStream connects source to in in mode, retrying while another
// instance's lease on it lives.
func coordStream(t *testing.T, in *servertest.Instance, source string, mode lakehousev1.SequenceMode) *testStream {
	t.Helper()
	cc := in.Dial()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
		if err == nil {
			err = st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
				SourceId: source, SequenceMode: mode}}})
		}
		var r *lakehousev1.StreamResponse
		if err == nil {
			r, err = st.Recv()
		}
		if err == nil && r.GetConnected() != nil {
			t.Cleanup(cancel)
			return &testStream{t: t, st: st, cancel: cancel, conn: r.GetConnected()}
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("connect %s: %v %v", source, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// legacyBatch is a legacy child's batch number seq holding entries lo..hi.
func legacyBatch(source string, seq, lo, hi uint64, retry bool) *codec.Batch {
	es := workload.Entries(int64(lo), int64(hi-lo+1))
	for i := range es {
		es[i].Sequence = lo + uint64(i)
	}
	return &codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, Retry: retry, SourceID: []byte(source),
		CorrelationID: []byte(fmt.Sprintf("c-%d", seq)), Entries: es}
}

func wantAckStatus(t *testing.T, what string, r *lakehousev1.StreamResponse, want lakehousev1.AckStatus) {
	t.Helper()
	if r.GetAck() == nil || r.GetAck().GetStatus() != want {
		t.Fatalf("%s: %v, want ack %v", what, r, want)
	}
}

func flushNow(t *testing.T, in *servertest.Instance) {
	t.Helper()
	res, err := in.Server.FlushNow(context.Background(), lakehousev1.FlushReason_FLUSH_REASON_MANUAL)
	if err != nil || !res.GetSuccess() {
		t.Fatalf("flush: %v %v", res, err)
	}
}

// entrySeqs are the entry sequences of source's rows in the instances'
// sinks, sorted, repeats kept.
func entrySeqs(t *testing.T, source string, ins ...*servertest.Instance) []uint64 {
	t.Helper()
	var out []uint64
	for _, in := range ins {
		for _, r := range in.Records() {
			if r.SourceID == source {
				out = append(out, r.EntrySeq)
			}
		}
	}
	slices.Sort(out)
	return out
}

func seqRange(lo, hi uint64) []uint64 {
	var out []uint64
	for q := lo; q <= hi; q++ {
		out = append(out, q)
	}
	return out
}

// TestEntryModeMoveKeepsCommittedDedup: a legacy child's entries committed by
// instance a, whose acks were lost when a died, are duplicates at b, the
// instance the source moves to, when the child resends them as a new batch
// (IS_RETRY): b seeds its dedup window from the lease row's committed ranges.
// Without them b's window starts empty and the entries are stored twice.
func TestEntryModeMoveKeepsCommittedDedup(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a := coordInstance(t, dsn, "inst-a")
	b := coordInstance(t, dsn, "inst-b")
	const src = "legacy-moved"
	sa := entryStream(t, a, src)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	wantAckStatus(t, "batch 2 at a", sa.sendFrame(legacyBatch(src, 2, 11, 20, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a)
	// a dies; the child never saw the acks of 1 and 2 (they were in
	// flight, or the bridge lost them with the socket).
	a.Crash()

	sb := entryStream(t, b, src)
	wantAckStatus(t, "1..10 resent to b", sb.sendFrame(legacyBatch(src, 3, 1, 10, true)), lakehousev1.AckStatus_ACK_STATUS_DUPLICATE)
	// A resend that overlaps new entries stores the new ones only.
	wantAckStatus(t, "15..25 at b", sb.sendFrame(legacyBatch(src, 4, 15, 25, true)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, b)
	if got, want := entrySeqs(t, src, a, b), seqRange(1, 25); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..25 once", got)
	}
}

// TestEntryModeMoveAcceptsUncommitted: entries instance a accepted (acked
// ok) and did not commit before it died are accepted by b: only committed
// entries travel with the lease row, and a's copy is dropped when it
// returns (the source moved), so refusing them at b would lose them.
func TestEntryModeMoveAcceptsUncommitted(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a := coordInstance(t, dsn, "inst-a")
	b := coordInstance(t, dsn, "inst-b")
	const src = "legacy-uncommitted"
	sa := entryStream(t, a, src)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a)
	wantAckStatus(t, "batch 2 at a", sa.sendFrame(legacyBatch(src, 2, 11, 20, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	a.Crash() // 11..20 are in a's log only

	sb := entryStream(t, b, src)
	wantAckStatus(t, "1..10 resent to b", sb.sendFrame(legacyBatch(src, 3, 1, 10, true)), lakehousev1.AckStatus_ACK_STATUS_DUPLICATE)
	wantAckStatus(t, "11..20 resent to b", sb.sendFrame(legacyBatch(src, 4, 11, 20, true)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, b)
	if got, want := entrySeqs(t, src, a, b), seqRange(1, 20); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..20 once", got)
	}
}

// TestEntryModeRangesRecordedAfterMarkFailure: when recording a commit's
// mark fails, the lease loop records it later with the commit's entry
// ranges, so the next owner still finds the committed entries.
func TestEntryModeRangesRecordedAfterMarkFailure(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a := coordInstanceWith(t, dsn, "inst-a", func(st *coord.Store) server.Coordinator {
		f := &failingMarks{Store: st}
		f.n.Store(1)
		return f
	})
	b := coordInstance(t, dsn, "inst-b")
	const src = "legacy-late-mark"
	sa := entryStream(t, a, src)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a) // committed; its mark is not recorded
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ranges sql.NullString
		if err := db.QueryRow(`SELECT committed_ranges::text FROM lakehouse_source_leases WHERE source_id = $1`, src).Scan(&ranges); err != nil {
			t.Fatal(err)
		}
		if ranges.Valid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease loop did not record the committed ranges")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.Crash()
	sb := entryStream(t, b, src)
	wantAckStatus(t, "1..10 resent to b", sb.sendFrame(legacyBatch(src, 2, 1, 10, true)), lakehousev1.AckStatus_ACK_STATUS_DUPLICATE)
}

// TestEntryModeReplayedLogRecordsRanges: entries a committed from its
// write-ahead log after a restart (what `lakehouse replay` of its data
// directory does too: reclaim the leases, commit the log) are recorded as
// committed ranges like any commit's, so they are duplicates at b.
func TestEntryModeReplayedLogRecordsRanges(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a := coordInstance(t, dsn, "inst-a")
	b := coordInstance(t, dsn, "inst-b")
	const src = "legacy-replayed"
	sa := entryStream(t, a, src)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	a.Restart() // not committed: 1..10 are in a's log
	flushNow(t, a)
	a.Crash()
	sb := entryStream(t, b, src)
	wantAckStatus(t, "1..10 resent to b", sb.sendFrame(legacyBatch(src, 2, 1, 10, true)), lakehousev1.AckStatus_ACK_STATUS_DUPLICATE)
	if got, want := entrySeqs(t, src, a, b), seqRange(1, 10); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..10 once", got)
	}
}

// marksFailFrom fails every MarkCommitted once fail is set: an instance
// that dies after a catalog commit and before recording its mark.
type marksFailFrom struct {
	*coord.Store
	fail atomic.Bool
}

func (f *marksFailFrom) MarkCommitted(ctx context.Context, marks []coord.Mark, keep coord.Window) (map[string]bool, error) {
	if f.fail.Load() {
		return nil, errors.New("injected: died before recording the mark")
	}
	return f.Store.MarkCommitted(ctx, marks, keep)
}

// pairWithFailingMarks starts instances a and b coordinated through a fresh
// database (coordInstance); a's marks fail once marks.fail is set.
func pairWithFailingMarks(t *testing.T) (a, b *servertest.Instance, marks *marksFailFrom) {
	t.Helper()
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a = coordInstanceWith(t, dsn, "inst-a", func(st *coord.Store) server.Coordinator {
		marks = &marksFailFrom{Store: st}
		return marks
	})
	return a, coordInstance(t, dsn, "inst-b"), marks
}

// sharedWatermarks makes a sink report the committed watermarks of another
// instance's sink as well: one catalog shared by both instances.
type sharedWatermarks struct {
	sink.Sink
	other *servertest.Instance
}

func (s sharedWatermarks) Watermarks(ctx context.Context) (map[string]sink.Watermark, error) {
	out, err := s.Sink.Watermarks(ctx)
	if err != nil {
		return nil, err
	}
	theirs, err := s.other.Sink.Watermarks(ctx)
	if err != nil {
		return nil, err
	}
	for id, w := range theirs {
		mine := out[id]
		out[id] = sink.Watermark{BatchSeq: max(mine.BatchSeq, w.BatchSeq), EntrySeq: max(mine.EntrySeq, w.EntrySeq)}
	}
	return out, nil
}

// TestEntryModeStaleMarkKeepsNumbering: instance a commits an entry-mode
// source's batches 1 and 2, records the mark of 1 only, and dies. The
// server numbers an entry-mode source's batches, and the tables skip a
// batch at or below their watermark as already committed, so b must number
// on from the tables' watermark (2), not from the lagging mark (1): batch 2
// at b would hold new entries and be skipped, losing them.
func TestEntryModeStaleMarkKeepsNumbering(t *testing.T) {
	a, b, marks := pairWithFailingMarks(t)
	b.WrapSink(func(s sink.Sink) sink.Sink { return sharedWatermarks{Sink: s, other: a} })
	b.Restart()
	const src = "legacy-stale-mark"
	sa := entryStream(t, a, src)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a)
	marks.fail.Store(true)
	wantAckStatus(t, "batch 2 at a", sa.sendFrame(legacyBatch(src, 2, 11, 20, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a)
	a.Crash()

	sb := entryStream(t, b, src)
	if got := sb.conn.GetLastSequence(); got != 2 {
		t.Fatalf("b: connected.last_sequence %d, want 2 (the tables' watermark; the mark says 1)", got)
	}
}
