package server_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// refusingSink refuses every commit: storage down after a restart.
type refusingSink struct{ sink.Sink }

func (refusingSink) Commit(context.Context, *sink.Flush) (sink.Result, error) {
	return sink.Result{}, errors.New("injected: storage down")
}

// TestRestartAfterPartialFlushPersistsNothingEarly: a flush commits some of
// its tables and the server dies before the others. Restarted, the server
// replays the flush's batches from its log; until they are committed to
// every table they are not persisted. Before, the restart raised the
// source's persisted sequence to the highest table watermark: a client
// connecting then was told persisted for batches a table still lacked (a
// client may drop a batch once persisted), the lease loop recorded them in
// the committed mark, and a first flush that then committed only part of
// the log saved that sequence, so the next restart skipped the rest of the
// log as committed.
func TestRestartAfterPartialFlushPersistsNothingEarly(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.FlushInterval = time.Hour }))
	const src = "partial-flush"
	batchMode := lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH
	st := openStream(t, in.Dial(), src, batchMode)
	wantAckStatus(t, "batch 1", st.sendFrame(legacyBatch(src, 1, 1, 8, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	flushNow(t, in)
	// W1's entries go round 8 tables: batch 2's flush commits users and
	// orders, then fails at items.
	in.Sink.FailCommit = func(table string) error {
		if table == "items" {
			return errors.New("injected: died here")
		}
		return nil
	}
	wantAckStatus(t, "batch 2", st.sendFrame(legacyBatch(src, 2, 9, 16, false)), lakehousev1.AckStatus_ACK_STATUS_OK)
	if res, err := in.Server.FlushNow(context.Background(), lakehousev1.FlushReason_FLUSH_REASON_MANUAL); err != nil || res.GetSuccess() {
		t.Fatalf("flush of batch 2: %v %v, want a failure at table items", res, err)
	}
	st.cancel()
	in.Crash()
	in.WrapSink(func(s sink.Sink) sink.Sink { return refusingSink{s} })
	in.Restart()

	st = openStream(t, in.Dial(), src, batchMode)
	if got := st.conn.GetLastSequence(); got != 2 {
		t.Fatalf("after the restart: connected.last_sequence %d, want 2", got)
	}
	if got := st.conn.GetPersistedSequence(); got != 1 {
		t.Fatalf("after the restart: connected.persisted_sequence %d, want 1 (batch 2 is not in table items)", got)
	}
	st.cancel()
	in.WrapSink(nil)
	in.Restart()
	flushNow(t, in)
	if got, want := entrySeqs(t, src, in), seqRange(1, 16); !slices.Equal(got, want) {
		t.Fatalf("stored entries %v, want each of 1..16 once", got)
	}
}
