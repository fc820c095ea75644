package iceberg

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// cancelAfterCtx reports itself cancelled from its n-th Err call on: a
// context that ends while a loop runs, without timing.
type cancelAfterCtx struct {
	context.Context
	calls, n int
}

func (c *cancelAfterCtx) Err() error {
	c.calls++
	if c.calls >= c.n {
		return context.Canceled
	}
	return nil
}

// TestMirrorBuildHonoursContext: building a commit's mirror rows stops when
// its context ends, also midway, so a commit timeout or a shutdown deadline
// is not held up by a large commit's decoding (it took 28 s under -race
// for 108,000 changes); with a live context every row is built.
func TestMirrorBuildHonoursContext(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true })
	tbl, err := s.loadOrCreateMirror(context.Background(), "users", nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]*mirrorChange, 5*mirrorBuildCheckRows)
	for i := range rows {
		rows[i] = &mirrorChange{key: fmt.Sprint(i), source: "do-a", entry: uint64(i + 1), after: fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i, i)}
	}
	ctx := &cancelAfterCtx{Context: context.Background(), n: 2} // ends after the first check
	if _, _, _, err := buildMirrorRecord(ctx, tbl.Schema(), rows, s.mirrorTyping(), MirrorTableSchema{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("build with a context that ended midway: %v, want context.Canceled", err)
	}
	if ctx.calls < 2 {
		t.Errorf("the build looked at its context %d times: it did not stop midway", ctx.calls)
	}
	rec, _, _, err := buildMirrorRecord(context.Background(), tbl.Schema(), rows, s.mirrorTyping(), MirrorTableSchema{})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	if rec.NumRows() != int64(len(rows)) {
		t.Errorf("built %d rows of %d", rec.NumRows(), len(rows))
	}
}
