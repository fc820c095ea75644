package server_test

import (
	"slices"
	"testing"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// TestRestartRecordsTheMarkACrashLeftUnrecorded: instance a commits a
// source's batches 2 and 3, saves its state and releases its write-ahead
// log, and dies before recording the committed mark (it stays at 1). The
// batches were acked ok, a level that survives a crash of the instance:
// restarted on its data directory, a must tell the client it has them
// (connected.last_sequence 3), and so must b once the source moves there.
// Before, a restart whose log held none of the source's batches took the
// lagging mark as the truth: the client was told 1 and asked for batches
// it no longer needs to hold, and a child that keeps batches only until
// ok was stuck (it failed so in TestScaleOutMirrorElectedCommitterKill9).
func TestRestartRecordsTheMarkACrashLeftUnrecorded(t *testing.T) {
	a, b, marks := pairWithFailingMarks(t)
	const src = "batch-unmarked"
	batchMode := lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH
	sa := coordStream(t, a, src, batchMode)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a)
	marks.fail.Store(true)
	wantAckStatus(t, "batch 2 at a", sa.sendFrame(legacyBatch(src, 2, 11, 20, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	wantAckStatus(t, "batch 3 at a", sa.sendFrame(legacyBatch(src, 3, 21, 30, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a) // committed, log released; the mark stays at 1
	sa.cancel()
	a.Crash()
	marks.fail.Store(false) // the restarted process reaches PostgreSQL
	a.Restart()

	sa = coordStream(t, a, src, batchMode)
	if got := sa.conn.GetLastSequence(); got != 3 {
		t.Fatalf("a after its restart: connected.last_sequence %d, want 3 (committed and acked before the crash)", got)
	}
	sa.cancel()
	a.Crash()
	sb := coordStream(t, b, src, batchMode)
	if got := sb.conn.GetLastSequence(); got != 3 {
		t.Fatalf("b: connected.last_sequence %d, want 3 (the mark a's restart recorded)", got)
	}
	wantAckStatus(t, "batch 4 at b", sb.sendFrame(legacyBatch(src, 4, 31, 40, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, b)
	if got, want := entrySeqs(t, src, a, b), seqRange(1, 40); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..40 once", got)
	}
}

// TestRestartRecordsTheRangesACrashLeftUnrecorded is the same crash with a
// legacy child's (entry-mode) source: the restart records the committed
// entry ranges with the mark, so the entries are duplicates at b when the
// child, which never saw their acks, resends them there.
func TestRestartRecordsTheRangesACrashLeftUnrecorded(t *testing.T) {
	a, b, marks := pairWithFailingMarks(t)
	const src = "legacy-unmarked"
	sa := entryStream(t, a, src)
	marks.fail.Store(true)
	wantAckStatus(t, "batch 1 at a", sa.sendFrame(legacyBatch(src, 1, 1, 10, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, a) // committed, log released; no mark, no ranges
	sa.cancel()
	a.Crash()
	marks.fail.Store(false)
	a.Restart()
	a.Crash()

	sb := entryStream(t, b, src)
	wantAckStatus(t, "1..10 resent to b", sb.sendFrame(legacyBatch(src, 2, 1, 10, true)), lakehousev1.AckStatus_ACK_STATUS_DUPLICATE)
	wantAckStatus(t, "11..20 at b", sb.sendFrame(legacyBatch(src, 3, 11, 20, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, b)
	if got, want := entrySeqs(t, src, a, b), seqRange(1, 20); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..20 once", got)
	}
}
