package iceberg

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestCommitLockWaitObserved: a flush's commit that waits for a table's
// commit lock, held here as a maintenance commit would hold it, records the
// wait in lakehouse_commit_lock_wait_seconds.
func TestCommitLockWaitObserved(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 8))
	before := lockWaits(t, s)
	unlock, err := s.lockTable(ctx, s.Identifier("users"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Commit(ctx, w1Flush(2, oneSource, 2, 1, 8))
		done <- err
	}()
	// Long enough for the stage and the other tables' commits to reach
	// the lock well before it is released.
	const held = time.Second
	time.Sleep(held)
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := lockWaits(t, s)
	if after.GetSampleCount() <= before.GetSampleCount() {
		t.Fatalf("no lock wait observed: %d samples before, %d after", before.GetSampleCount(), after.GetSampleCount())
	}
	if waited := after.GetSampleSum() - before.GetSampleSum(); waited < (held / 4).Seconds() {
		t.Errorf("observed %.3fs of waiting, the lock was held %v", waited, held)
	}
}

func lockWaits(t *testing.T, s *Sink) *dto.Histogram {
	t.Helper()
	var m dto.Metric
	if err := s.commitLocks.ingestWait.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram()
}
