package server_test

import (
	"bytes"
	"runtime/pprof"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestProfileLabels: stream handlers and the flusher carry the task label
// of CPU profiles (internal/proflabel), which is how an operator splits the
// server's CPU between ingest and flush. The goroutine profile shows the
// same labels as the CPU profile.
func TestProfileLabels(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "labelled", 0)
	ts.sendFrame(smallBatch("labelled", 1, 3))
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"task":"ingest"`, `"task":"flush"`} {
		if !bytes.Contains(b.Bytes(), []byte(want)) {
			t.Errorf("no goroutine labelled %s in the goroutine profile", want)
		}
	}
}
