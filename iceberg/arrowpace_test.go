package iceberg

import (
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/pace"
	"github.com/dot-do/lakehouse-rpc/internal/testing/turns"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestStringColumnStepsAside: building one string column of a stage's take
// yields to ingest within the column (every stringRowsPerYield values, at
// most once per pace.Interval), not only between columns. On one processor,
// a goroutine waiting to run gets about a turn per millisecond of the
// build; without the yields inside the column it gets one per preemption
// (10 ms or more). The test asks for a turn per 5 ms: a clean-clone CI run
// under the race detector on a busy machine saw one per 3.2 ms.
func TestStringColumnStepsAside(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	row := &sink.Row{SourceID: "src", Entry: codec.Entry{After: []byte(`{"id":1,"name":"a"}`)}}
	rows := make([]*sink.Row, 1<<20)
	for i := range rows {
		rows[i] = row
	}
	counter := turns.Start()
	before := counter.Turns()
	var pacer pace.Pacer
	start := time.Now()
	var elapsed time.Duration
	for elapsed < 30*time.Millisecond {
		col, err := stringColumn(arrow.BinaryTypes.String, rows, true, func(r *sink.Row) []byte { return r.After }, &pacer)
		if err != nil {
			t.Fatal(err)
		}
		n := col.Len()
		col.Release()
		if n != len(rows) {
			t.Fatalf("column of %d values, want %d", n, len(rows))
		}
		elapsed = time.Since(start)
	}
	got := counter.Turns() - before
	counter.Stop()
	if want := int64(elapsed / (5 * time.Millisecond)); got < want {
		t.Errorf("the waiting goroutine ran %d times during %v of building string columns, want at least %d", got, elapsed, want)
	}
}
