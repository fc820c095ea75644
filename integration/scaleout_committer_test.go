//go:build unix

package integration

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
)

// TestScaleOutElectedCommitter: two `lakehouse serve --coordination catalog
// --flush-interval 1s` processes on one PostgreSQL catalog (the elected
// committer is on by default), each streaming its own sources to the same
// tables over several intervals. Every table's snapshots before the final
// manual flushes are in distinct commit slots (one elected committer per table, never one snapshot per
// instance per interval), some snapshot holds both instances' parts, and
// every entry is stored exactly once. With --elected-committer=false each
// instance commits on its own ticker: snapshots of one table come in pairs
// within a slot and the check fails.
func TestScaleOutElectedCommitter(t *testing.T) {
	so := newScaleOut(t)
	const interval = time.Second
	a, addrA := so.start("a", "--flush-interval", interval.String())
	b, addrB := so.start("b", "--flush-interval", interval.String())
	var srcs []*resumingSource
	for i := range 6 {
		addr := addrA
		if i%2 == 1 {
			addr = addrB
		}
		srcs = append(srcs, newResumingSource("committer-"+string(rune('a'+i)), addr, scaleOutBatch, 4))
	}
	// At least minSteps; then on until some table has a snapshot holding
	// both instances' parts. Whether one does depends on the instances'
	// flushes falling in one commit slot: on a loaded machine a flush
	// takes a whole interval, and the two can alternate for a few slots.
	const minSteps, maxSteps, perStep = 5, 30, 6
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	steps := uint64(0)
	for steps < minSteps || (steps < maxSteps && sharedSnapshots(ctx, so) == 0) {
		steps++
		var wg sync.WaitGroup
		for _, s := range srcs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.run(ctx, steps*perStep)
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			t.Fatalf("sources did not finish step %d\n%s", steps, so.logs("a", "b"))
		}
		time.Sleep(interval / 2)
	}
	t.Logf("%d steps of %d batches per source", steps, perStep)
	// Manual flushes are committed at once, outside the one-per-slot
	// bound: the check below stops at them.
	manualAt := time.Now()
	for _, addr := range []string{addrA, addrB} {
		if r := flushRPC(t, addr); !r.GetSuccess() {
			t.Fatalf("flush on %s: %+v\n%s", addr, r, so.logs("a", "b"))
		}
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	checkExactlyOnce(t, srcs, so.read(), int(steps)*perStep*scaleOutBatch)

	tables := so.snapshots(ctx)
	shared, snapshots := 0, 0
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		var (
			last   int64
			minGap time.Duration
		)
		for _, snap := range tables[name] {
			if snap.Summary == nil || snap.Summary.Properties[iceberg.SummaryFlushID] == "" {
				continue
			}
			snapshots++
			if holdsBothInstances(snap) {
				shared++
			}
			// A committer commits a table once per commit slot at most
			// (same clock: one machine).
			at, prev := time.UnixMilli(snap.TimestampMs), time.UnixMilli(last)
			if last != 0 && at.Before(manualAt) && commitslot.Of(at, interval) == commitslot.Of(prev, interval) {
				t.Errorf("table %s: two snapshots %v apart in one %v commit slot", name, at.Sub(prev), interval)
			}
			if gap := at.Sub(prev); last != 0 && at.Before(manualAt) && (minGap == 0 || gap < minGap) {
				minGap = gap
			}
			last = snap.TimestampMs
		}
		t.Logf("table %s: shortest gap between snapshots %v", name, minGap)
	}
	t.Logf("%d tables, %d snapshots, %d holding both instances' parts", len(tables), snapshots, shared)
	if shared == 0 {
		t.Error("no snapshot holds both instances' parts")
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// TestScaleOutElectedCommitterPaused: the instance holding committer roles
// is SIGSTOPped. PostgreSQL ends its locks' session after the lease TTL
// (idle_session_timeout, kept alive by a live holder), so the other
// instance takes its tables and its own flush completes within seconds;
// resumed, the paused instance commits its acked batches through the new
// committer, and every entry is stored exactly once. Without the session
// timeout the other instance's flush waits until the paused one resumes
// (checked: the flush RPC times out after a minute).
func TestScaleOutElectedCommitterPaused(t *testing.T) {
	so := newScaleOut(t)
	const interval = time.Second
	a, addrA := so.start("a", "--flush-interval", interval.String())
	srcA := newResumingSource("paused-a", addrA, scaleOutBatch, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// a, alone, takes every table's role.
	if err := srcA.run(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if r := flushRPC(t, addrA); !r.GetSuccess() {
		t.Fatalf("flush on a: %+v", r)
	}
	b, addrB := so.start("b", "--flush-interval", interval.String())
	srcB := newResumingSource("paused-b", addrB, scaleOutBatch, 4)
	if err := srcA.run(ctx, 20); err != nil { // acked on a, not committed
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := srcB.run(ctx, 20); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if r := flushRPC(t, addrB); !r.GetSuccess() {
		t.Fatalf("flush on b while a is paused: %+v\n%s", r, so.logs("a", "b"))
	}
	t.Logf("b's flush with a paused took %v", time.Since(start).Round(time.Millisecond))
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if r := flushRPC(t, addrA); !r.GetSuccess() {
		t.Fatalf("flush on a after SIGCONT: %+v\n%s", r, so.logs("a", "b"))
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	checkExactlyOnce(t, []*resumingSource{srcA, srcB}, so.read(), 20*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// sharedSnapshots counts the snapshots, over every table, that hold both
// instances' parts (read while the instances run).
func sharedSnapshots(ctx context.Context, so *scaleOut) int {
	n := 0
	for _, snaps := range so.snapshots(ctx) {
		for _, snap := range snaps {
			if holdsBothInstances(snap) {
				n++
			}
		}
	}
	return n
}

// holdsBothInstances says whether snap commits parts of several instances.
func holdsBothInstances(snap table.Snapshot) bool {
	return snap.Summary != nil && strings.Contains(snap.Summary.Properties[iceberg.SummaryInstances], ",")
}
