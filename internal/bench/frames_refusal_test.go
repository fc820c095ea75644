package bench

import (
	"context"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// stalledSink holds every commit until a time: storage that is slow to
// answer, so that a small log fills and the server refuses batches.
type stalledSink struct {
	sink.Sink
	until time.Time
}

func (s stalledSink) Commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	select {
	case <-time.After(time.Until(s.until)):
	case <-ctx.Done():
		return sink.Result{}, ctx.Err()
	}
	return s.Sink.Commit(ctx, f)
}

// TestFramesRefusalProvokesNoSequenceNacks: while the log is full, the
// frame generator sends a refused batch again alone, not with the batches
// after it, which the server (taking a stream's batches in order) would
// refuse as invalid_sequence each time. The batches already in flight
// behind the first refusal are counted as stale nacks, not as nacks or
// errors, and every acknowledged entry is committed once.
//
// Before the fix every retry of a refused batch went out with up to
// MaxPending-1 followers: invalid_sequence nacks in Nacks, several per
// buffer_full.
func TestFramesRefusalProvokesNoSequenceNacks(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		quiet(c)
		c.WALMaxBytes = 256 << 10 // about a dozen batches of 100 W1 entries
		c.WALSegmentBytes = 16 << 10
		c.FlushBytes = 32 << 10
		c.FlushInterval = 50 * time.Millisecond
		c.RetryDelay = 20 * time.Millisecond
	}))
	in.WrapSink(func(s sink.Sink) sink.Sink { return stalledSink{Sink: s, until: time.Now().Add(time.Second)} })
	in.Restart()
	const sources, pending = 2, uint64(8)
	s, err := Frames(context.Background(), Config{Addr: in.Addr, Sources: sources, Entries: 8000, BatchSize: 100, MaxPending: int(pending)})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(s)
	refusals := s.Nacks["buffer_full"]
	if refusals == 0 {
		t.Fatalf("the stalled storage refused nothing: %+v", s)
	}
	if n := s.Nacks["invalid_sequence"]; n != 0 {
		t.Errorf("%d invalid_sequence nacks counted as nacks (behind %d buffer_full)", n, refusals)
	}
	// Followers come once per refusal that follows an ack, not with every
	// retry: most refusals here are retries refused again while the
	// storage stalls (before the fix: about pending-1 per refusal).
	if 2*s.StaleNacks > refusals*(pending-1) {
		t.Errorf("%d stale nacks for %d buffer_full: retries were sent with followers", s.StaleNacks, refusals)
	}
	if s.Errors != 0 || s.Entries != 8000 || s.UnackedBatches != 0 {
		t.Fatalf("summary %+v", s)
	}
	in.Stop()
	if n := len(in.Records()); n != 8000 {
		t.Fatalf("%d rows committed, 8000 acknowledged", n)
	}
}
