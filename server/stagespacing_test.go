package server_test

import (
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/server"
)

// TestThresholdStagesSpaced: a steady trickle that reaches the entry
// threshold every few batches is staged about once a second (the spacing),
// not at every threshold: each stage writes a data file per table, and small
// files cost file creation and compaction.
func TestThresholdStagesSpaced(t *testing.T) {
	in, ss := startStaging(t, func(c *server.Config) {
		c.FlushInterval = time.Hour
		c.FlushEntries = 20 // every two batches
	})
	ts := openStream(t, in.Dial(), "spaced", 0)
	const run = 2500 * time.Millisecond
	start := time.Now()
	var seq uint64
	for time.Since(start) < run {
		seq++
		if a := ts.sendFrame(smallBatch("spaced", seq, 10)).GetAck(); a == nil {
			t.Fatalf("batch %d not acked", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stages, _, _, _ := ss.counts()
	t.Logf("%d batches in %v: %d stages", seq, run, stages)
	if stages == 0 {
		t.Fatal("nothing staged")
	}
	if stages > 4 {
		t.Errorf("%d stages in %v: threshold stages should be a second apart", stages, run)
	}
}
