//go:build unix

package integration

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// exitFaultEnv makes `lakehouse serve` exit abruptly before its N-th
// Iceberg table commit (cmd/lakehouse/serve.go).
const exitFaultEnv = "LAKEHOUSE_TEST_EXIT_BEFORE_TABLE_COMMIT"

// TestScaleOutPartialFlushBeforeMark: an instance dies between two table
// commits of its first flush, before it ever recorded a committed mark in
// the source's lease row: some tables hold batches 1..5, others nothing.
// The source moves to another instance, which must not tell it
// last_sequence 5 (the highest table watermark): a client holding those
// batches until persisted would drop them and the rows missing from the
// other tables would be lost. It tells 0; the client resends 1..5, the
// tables that have them skip them, and every entry is stored exactly once.
func TestScaleOutPartialFlushBeforeMark(t *testing.T) {
	so := newScaleOut(t)
	// Each instance commits its own flushes here: the partial flush is
	// one instance's direct commit, table by table (the elected
	// committer's own commits are TestElectedCommitterDeadStager's).
	so.env = []string{exitFaultEnv + "=3"} // a exits before its 3rd table commit
	// One table after the other, so that two are committed when it exits
	// (side by side, the exit could cut every commit in flight).
	a, addrA := so.start("a", "--flush-interval", "1h", "--flush-age", "1h", "--elected-committer=false", "--commit-parallelism", "1")
	so.env = nil
	b, addrB := so.start("b", "--flush-interval", "1h", "--flush-age", "1h", "--elected-committer=false")
	src := newResumingSource("partial", addrA, scaleOutBatch, 4)
	runAll(t, []*resumingSource{src}, addrA, 5)
	go func() { // a dies in it
		cc, err := grpc.NewClient(addrA, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			_, _ = lakehousev1.NewCDCServiceClient(cc).Flush(context.Background(), &lakehousev1.FlushRequest{})
			cc.Close()
		}
	}()
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("a did not exit before its third table commit\n%s", so.logs("a"))
	}
	if n := len(so.read()); n == 0 || n == 5*scaleOutBatch {
		t.Fatalf("%d rows stored: want some of the tables committed, not all", n)
	}
	// a's lease expires; b takes the source.
	if got := connectedLast(t, addrB, src.id); got != 0 {
		t.Fatalf("b: connected.last_sequence %d, want 0 (a never recorded a committed mark)\n%s", got, so.logs("a", "b"))
	}
	// The source resends what b lacks (all of it, as a client holding
	// batches until persisted does) and goes on.
	src = newResumingSource(src.id, addrB, scaleOutBatch, 4)
	runAll(t, []*resumingSource{src}, addrB, 8)
	if r := flushRPC(t, addrB); !r.GetSuccess() {
		t.Fatalf("flush on b: %+v", r)
	}
	if err := b.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, []*resumingSource{src}, so.read(), 8*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}
