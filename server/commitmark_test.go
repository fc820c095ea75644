package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// markingSink is a stagingSink that implements sink.CommitMarker and
// records, for each Stage and CommitStaged call, whether a commit was
// marked at the time.
type markingSink struct {
	*stagingSink

	mu       sync.Mutex
	marked   int    // marks begun and not ended
	begun    int    // marks begun in all
	stageIn  []bool // per Stage call: inside a mark
	commitIn []bool // per CommitStaged call: inside a mark
}

func (m *markingSink) BeginCommit() func() {
	m.mu.Lock()
	m.marked++
	m.begun++
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		m.marked--
		m.mu.Unlock()
	}
}

func (m *markingSink) inMark() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.marked > 0
}

func (m *markingSink) Stage(ctx context.Context, f *sink.Flush) (sink.Staged, error) {
	in := m.inMark()
	m.mu.Lock()
	m.stageIn = append(m.stageIn, in)
	m.mu.Unlock()
	return m.stagingSink.Stage(ctx, f)
}

func (m *markingSink) CommitStaged(ctx context.Context, staged []sink.Staged, c sink.CommitInfo) (sink.Result, error) {
	in := m.inMark()
	m.mu.Lock()
	m.commitIn = append(m.commitIn, in)
	m.mu.Unlock()
	return m.stagingSink.CommitStaged(ctx, staged, c)
}

func (m *markingSink) calls() (stageIn, commitIn []bool, marked, begun int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]bool(nil), m.stageIn...), append([]bool(nil), m.commitIn...), m.marked, m.begun
}

// TestCommitMarksItsStage: a commit marks its whole course for a
// sink.CommitMarker, the stage of what was still buffered included (the
// Iceberg sink's maintenance steps aside for it), and a stage a threshold
// started between commits is not marked.
func TestCommitMarksItsStage(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.FlushInterval = time.Hour
		c.FlushAge = time.Hour
		c.FlushEntries = 5
	}))
	ms := &markingSink{stagingSink: &stagingSink{}}
	in.WrapSink(func(s sink.Sink) sink.Sink { ms.Sink = s; return ms })
	in.Restart()
	ts := openStream(t, in.Dial(), "marks", 0)

	// 10 entries reach the threshold: staged at once, outside any commit.
	if a := ts.sendFrame(smallBatch("marks", 1, 10)).GetAck(); a == nil {
		t.Fatal("batch 1 not acked")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if stageIn, _, _, _ := ms.calls(); len(stageIn) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the threshold never staged batch 1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// 2 entries stay queued until the commit.
	b2 := smallBatch("marks", 2, 2)
	b2.Entries = workload.Entries(10, 2) // entries 11 and 12
	if a := ts.sendFrame(b2).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("batch 2: %v", a)
	}
	res, err := in.Server.FlushNow(context.Background(), lakehousev1.FlushReason_FLUSH_REASON_MANUAL)
	if err != nil || !res.Success {
		t.Fatalf("flush: %v %v", res, err)
	}
	stageIn, commitIn, marked, begun := ms.calls()
	if len(stageIn) != 2 || stageIn[0] || !stageIn[1] {
		t.Errorf("stages inside a commit's mark: %v; want [false true] (the threshold's, then the commit's)", stageIn)
	}
	if len(commitIn) != 1 || !commitIn[0] {
		t.Errorf("commits inside a commit's mark: %v; want [true]", commitIn)
	}
	if marked != 0 || begun != 1 {
		t.Errorf("%d marks open, %d begun after the flush; want 0, 1", marked, begun)
	}
	if recs := in.Records(); len(recs) != 12 {
		t.Errorf("sink holds %d rows, want 12", len(recs))
	}
}
