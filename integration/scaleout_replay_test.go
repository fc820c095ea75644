//go:build unix

package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// replay runs `lakehouse replay` on instance name's data directory, as a
// process of its own (another "instance"), and returns its report.
func (so *scaleOut) replay(name string) string {
	so.t.Helper()
	cmd := exec.Command(lakehouseBin(so.t), "replay", "--data-dir", filepath.Join(so.dir, name),
		"--catalog-uri", so.dsn, "--warehouse", so.warehouse, "--coordination", "catalog", "--lease-ttl", "2s",
		"--timeout", "2m")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		so.t.Fatalf("lakehouse replay: %v\nstdout:\n%s\nstderr:\n%s\n%s", err, stdout.String(), stderr.String(), so.logs("a", "b"))
	}
	so.t.Logf("replay: %s", strings.TrimSpace(stdout.String()))
	return stdout.String()
}

// TestScaleOutReplay: an instance is killed (-9) holding acked batches not
// yet committed, on top of committed ones. One of its sources moves to
// another instance meanwhile and sends more there. `lakehouse replay`, run
// on the dead instance's directory from another process, commits the
// batches of the sources that did not move (the committed ones are skipped)
// and drops those of the moved source (its new owner is authoritative);
// every acked entry is stored exactly once; the sources resume from the
// replayed state; a second replay finds nothing.
func TestScaleOutReplay(t *testing.T) {
	so := newScaleOut(t)
	a, addrA := so.start("a", "--flush-interval", "1h", "--flush-age", "1h")
	b, addrB := so.start("b", "--flush-interval", "1h", "--flush-age", "1h")
	srcs := make([]*resumingSource, 3)
	for i := range srcs {
		srcs[i] = newResumingSource("replay-"+string(rune('a'+i)), addrA, scaleOutBatch, 4)
	}
	runAll(t, srcs, addrA, 10)
	if r := flushRPC(t, addrA); !r.GetSuccess() || r.GetBatchesFlushed() != 30 {
		t.Fatalf("flush on a: %+v", r)
	}
	runAll(t, srcs, addrA, 20) // acked ok on a, not committed
	a.kill()

	// The third source moves once a's lease expires: b tells it the
	// committed state (10) and it resends from there.
	moved := srcs[2:]
	if got := connectedLast(t, addrB, moved[0].id); got != 10 {
		t.Errorf("moved source: connected.last_sequence %d on b, want 10", got)
	}
	runAll(t, moved, addrB, 25)
	if r := flushRPC(t, addrB); !r.GetSuccess() || r.GetBatchesFlushed() != 15 {
		t.Fatalf("flush on b: %+v", r)
	}

	out := so.replay("a")
	if !strings.Contains(out, ": 20 batches, 1000 entries committed; 10 batches dropped") {
		t.Errorf("replay report: %q, want 20 batches (2 sources x 11..20) committed and 10 dropped (the moved source)", out)
	}
	// Mirrors are on by default, in replay too: the mirror tables catch up
	// with their changelog tables (the replayed batches included).
	so.waitMirrorsCaughtUp()
	if out := so.replay("a"); !strings.Contains(out, ": 0 batches, 0 entries committed; 0 batches dropped") {
		t.Errorf("second replay: %q, want nothing", out)
	}
	// The sources that stayed resume from the replayed state, wherever.
	stayed := srcs[:2]
	if got := connectedLast(t, addrB, stayed[0].id); got != 20 {
		t.Errorf("after replay: connected.last_sequence %d on b, want 20", got)
	}
	runAll(t, stayed, addrB, 22)
	if r := flushRPC(t, addrB); !r.GetSuccess() {
		t.Fatalf("flush on b: %+v", r)
	}
	if err := b.stop(30 * time.Second); err != nil {
		t.Fatalf("stop b: %v\n%s", err, so.logs("a", "b"))
	}
	stored := so.read()
	checkExactlyOnce(t, stayed, storedOf(stored, stayed), 22*scaleOutBatch)
	checkExactlyOnce(t, moved, storedOf(stored, moved), 25*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// storedOf keeps the rows of srcs.
func storedOf(stored []storedEntry, srcs []*resumingSource) []storedEntry {
	ids := make(map[string]bool, len(srcs))
	for _, s := range srcs {
		ids[s.id] = true
	}
	var out []storedEntry
	for _, e := range stored {
		if ids[e.source] {
			out = append(out, e)
		}
	}
	return out
}

// waitMirrorsCaughtUp waits until every changelog table has a mirror table
// with the same watermarks (a mirror commit follows its changelog commit,
// possibly by another instance's committer), and fails the test if that
// does not happen within 30 s.
func (so *scaleOut) waitMirrorsCaughtUp() {
	so.t.Helper()
	ctx := context.Background()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if last = so.mirrorLag(ctx); last == "" {
			return
		}
	}
	so.t.Errorf("mirrors behind their changelog tables after 30 s: %s", last)
}

// mirrorLag describes the first table whose mirror lags its changelog
// table, "" when none does.
func (so *scaleOut) mirrorLag(ctx context.Context) string {
	cl, err := iceberg.Open(ctx, so.config())
	if err != nil {
		so.t.Fatal(err)
	}
	defer cl.Close()
	mcfg := so.config()
	mcfg.Namespace = mirrorNamespace
	mk, err := iceberg.Open(ctx, mcfg)
	if err != nil {
		so.t.Fatal(err)
	}
	defer mk.Close()
	tables, err := cl.Tables(ctx)
	if err != nil {
		so.t.Fatal(err)
	}
	mirrors, err := mk.Tables(ctx)
	if err != nil {
		so.t.Fatal(err)
	}
	mwm := map[string]any{}
	for _, m := range mirrors {
		mwm[m.Name] = m.Watermarks
	}
	for _, tb := range tables {
		if !reflect.DeepEqual(mwm[tb.Name], any(tb.Watermarks)) {
			return fmt.Sprintf("%s: changelog %v, mirror %v", tb.Name, tb.Watermarks, mwm[tb.Name])
		}
	}
	return ""
}
