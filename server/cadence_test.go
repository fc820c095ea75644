package server_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// stagingSink turns the JSON-lines sink into a Stager: Stage keeps a deep
// copy of the flush, CommitStaged commits the kept flushes in order. It
// records when each call happened and can fail commits or hang them.
type stagingSink struct {
	sink.Sink

	mu       sync.Mutex
	stages   []time.Time
	commits  []time.Time
	failing  bool
	down     bool          // a storage outage: Stage fails too
	hang     bool          // CommitStaged blocks until its context ends
	delay    time.Duration // each Stage takes this long, like writing files
	attempts int
}

type keptFlush struct{ f *sink.Flush }

func (k *keptFlush) StagedRows() int64 {
	var n int64
	for _, t := range k.f.Tables {
		n += int64(len(t.Rows))
	}
	return n
}
func (k *keptFlush) StagedBytes() int64 { return k.StagedRows() }

func (s *stagingSink) Stage(ctx context.Context, f *sink.Flush) (sink.Staged, error) {
	s.mu.Lock()
	s.stages = append(s.stages, time.Now())
	delay, down := s.delay, s.down
	s.mu.Unlock()
	time.Sleep(delay)
	if down {
		return nil, errors.New("injected storage outage")
	}
	cp := *f
	cp.Tables = make([]sink.Table, len(f.Tables))
	for i, t := range f.Tables {
		cp.Tables[i] = sink.Table{Name: t.Name, Rows: make([]sink.Row, len(t.Rows))}
		for j, r := range t.Rows {
			r.Table, r.RowID = bytes.Clone(r.Table), bytes.Clone(r.RowID)
			r.Before, r.After = bytes.Clone(r.Before), bytes.Clone(r.After)
			cp.Tables[i].Rows[j] = r
		}
	}
	return &keptFlush{&cp}, nil
}

func (s *stagingSink) CommitStaged(ctx context.Context, staged []sink.Staged, c sink.CommitInfo) (sink.Result, error) {
	called := time.Now()
	s.mu.Lock()
	s.attempts++
	failing, hang := s.failing || s.down, s.hang
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return sink.Result{}, ctx.Err()
	}
	if failing {
		return sink.Result{}, errors.New("injected commit failure")
	}
	var res sink.Result
	for _, st := range staged {
		r, err := s.Sink.Commit(ctx, st.(*keptFlush).f)
		if err != nil {
			return res, err
		}
		res.RowsWritten += r.RowsWritten
	}
	s.mu.Lock()
	s.commits = append(s.commits, called) // when the commit started: the clock schedules starts
	s.mu.Unlock()
	return res, nil
}

func (s *stagingSink) set(f func(*stagingSink)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *stagingSink) counts() (stages, commits, attempts int, times []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stages), len(s.commits), s.attempts, append([]time.Time(nil), s.commits...)
}

func startStaging(t *testing.T, mod func(*server.Config)) (*servertest.Instance, *stagingSink) {
	in := servertest.Start(t, servertest.WithConfig(mod))
	ss := &stagingSink{}
	in.WrapSink(func(s sink.Sink) sink.Sink { ss.Sink = s; return ss })
	in.Restart()
	return in, ss
}

// TestCommitCadence: thresholds stage (often), commits follow the interval
// (rarely), and every entry lands once with its persisted message.
func TestCommitCadence(t *testing.T) {
	const interval = 300 * time.Millisecond
	in, ss := startStaging(t, func(c *server.Config) {
		c.FlushInterval = interval
		c.FlushEntries = 5
	})
	ss.set(func(s *stagingSink) { s.delay = 40 * time.Millisecond })
	ts := openStream(t, in.Dial(), "cadence", 0)
	start := time.Now()
	var seq uint64
	for time.Since(start) < 5*interval {
		seq++
		if a := ts.sendFrame(smallBatch("cadence", seq, 10)).GetAck(); a == nil {
			t.Fatalf("batch %d not acked", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Wait for the persisted watermark of the last batch: it needs a commit.
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		r, err := ts.st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if p := r.GetPersisted(); p != nil && p.SequenceNumber >= seq {
			done = true
		}
		select {
		case <-deadline:
			t.Fatal("no persisted message for the last batch")
		default:
		}
	}
	stages, commits, _, times := ss.counts()
	t.Logf("%d batches: %d stages, %d commits", seq, stages, commits)
	if stages <= commits {
		t.Errorf("%d stages for %d commits: thresholds should stage between commits", stages, commits)
	}
	// Commit passes start an interval apart. A pass first stages what is
	// queued (up to one stage's delay here, longer on a loaded machine),
	// so the commits themselves can start closer; but never a threshold's
	// spacing apart, as they would if thresholds committed.
	if max := int(time.Since(start)/interval) + 2; commits > max {
		t.Errorf("%d commits in %v: more than one per interval", commits, time.Since(start).Round(time.Millisecond))
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < interval/2 {
			t.Errorf("commits %d and %d only %v apart (interval %v)", i-1, i, gap, interval)
		}
	}
	assertExactlyOnce(t, in, map[string]int{"cadence": int(seq) * 10})
}

// TestStagedBatchesSurviveCommitFailureAndCrash: staged batches whose commit
// fails stay staged (fallback acks, recovery), and after a crash they are
// replayed from the write-ahead log and committed once.
func TestStagedBatchesSurviveCommitFailureAndCrash(t *testing.T) {
	in, ss := startStaging(t, func(c *server.Config) {
		c.FlushInterval = time.Hour
		c.FlushEntries = 5
		c.RecoveryInitialDelay = 20 * time.Millisecond
		c.RecoveryMaxDelay = 50 * time.Millisecond
	})
	ss.set(func(s *stagingSink) { s.failing = true })
	ts := openStream(t, in.Dial(), "staged", 0)
	for seq := uint64(1); seq <= 4; seq++ {
		ts.sendFrame(smallBatch("staged", seq, 10))
	}
	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || res.Success {
		t.Fatalf("flush while commits fail: %v %v", res, err)
	}
	st := in.Server.Status()
	if !st.Recovery.Active || st.Staged.GetBatchCount() == 0 {
		t.Fatalf("status while failing: recovery %v staged %v", st.Recovery, st.Staged)
	}
	if a := ts.sendFrame(smallBatch("staged", 5, 10)).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_FALLBACK {
		t.Fatalf("ack while failing: %v", a)
	}
	// A crash now: nothing was committed; the log has every batch.
	in.Crash()
	ss.set(func(s *stagingSink) { s.failing = false })
	in.Restart()
	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || !res.Success {
		t.Fatalf("flush after restart: %v %v", res, err)
	}
	assertExactlyOnce(t, in, map[string]int{"staged": 50})

	// And without a crash: the recovery loop commits the staged batches.
	ss.set(func(s *stagingSink) { s.failing = true })
	ts = openStream(t, in.Dial(), "staged", 0)
	for seq := uint64(6); seq <= 8; seq++ {
		ts.sendFrame(smallBatch("staged", seq, 10))
	}
	in.Server.FlushNow(context.Background(), 0)
	ss.set(func(s *stagingSink) { s.failing = false })
	deadline := time.Now().Add(10 * time.Second)
	for in.Server.Status().Recovery.Active {
		if time.Now().After(deadline) {
			t.Fatal("recovery never committed the staged batches")
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertExactlyOnce(t, in, map[string]int{"staged": 80})
}

// TestShutdownBoundedWhenTheSinkHangs: a commit that never returns does not
// hold SIGTERM past its drain deadline; the data stays in the log and is
// committed after the restart.
func TestShutdownBoundedWhenTheSinkHangs(t *testing.T) {
	in, ss := startStaging(t, func(c *server.Config) { c.FlushInterval = time.Hour })
	ts := openStream(t, in.Dial(), "hung", 0)
	for seq := uint64(1); seq <= 3; seq++ {
		ts.sendFrame(smallBatch("hung", seq, 10))
	}
	ss.set(func(s *stagingSink) { s.hang = true })
	start := time.Now()
	err := in.ShutdownWithin(300 * time.Millisecond)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %v with a hung sink (deadline 300ms)", took)
	}
	t.Logf("shutdown with a hung sink: %v after %v", err, time.Since(start))
	ss.set(func(s *stagingSink) { s.hang = false })
	in.Restart()
	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || !res.Success {
		t.Fatalf("flush after restart: %v %v", res, err)
	}
	assertExactlyOnce(t, in, map[string]int{"hung": 30})
}
