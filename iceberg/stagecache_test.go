package iceberg

import (
	"context"
	"testing"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestStageSeesTheLastCommit: Stage keeps the tables it loaded until the
// next commit; a flush staged again after its commit finds the commit's
// watermarks and stages nothing, and staging twice before a commit reads the
// catalog once per table.
func TestStageSeesTheLastCommit(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), nil)
	f1 := w1Flush(1, testSources, 1, 2, 16)
	f2 := w1Flush(2, testSources, 3, 2, 16)
	st1, err := s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	cached := make(map[string]bool)
	for name := range s.stageTables {
		cached[name] = true
	}
	st2, err := s.Stage(ctx, f2)
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.stageTables {
		if !cached[name] {
			t.Errorf("table %s loaded by the second stage only", name)
		}
	}
	if len(cached) == 0 {
		t.Fatal("nothing cached by the first stage")
	}
	if _, err := s.CommitStaged(ctx, []sink.Staged{st1, st2}, sink.CommitInfo{ID: 2, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	again, err := s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	if again.StagedRows() != 0 {
		t.Errorf("flush 1 staged again after its commit: %d rows staged, want 0 (the commit's watermarks cover it)", again.StagedRows())
	}
	diffKeys(t, flushKeys(f1, f2), scanKeys(t, s))
}
