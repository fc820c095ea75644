//go:build unix

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestS3PostgresScaleOut runs the multi-instance mode on the set-up it is
// made for: a PostgreSQL SQL catalog and an S3 warehouse (SeaweedFS, or
// gofakes3 in CI), shared by two `lakehouse serve --coordination catalog`
// processes with table maintenance every 300 ms. Two sources stream to each
// instance; one instance is killed (-9) while its sources stream, and they
// move to the other, which tells them the committed state; the killed
// instance then restarts on its write-ahead log, whose batches of the moved
// sources must be dropped. Meanwhile a reader checks every table snapshot it
// sees through the catalog (no row missing or doubled while compaction and
// expiry run). At the end every acked entry is stored exactly once and
// maintenance did run.
func TestS3PostgresScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	so := newScaleOut(t)
	s3 := startS3(t)
	s3.CreateBucket(t, "lake")
	so.warehouse, so.props, so.env, so.maintain = "s3://lake/wh", s3.Props(), s3.Env(), true
	const (
		batchSize  = 50
		maxBatches = 200
	)
	httpA, httpB := freeAddr(t), freeAddr(t)
	opts := []string{"--flush-interval", "300ms", "--flush-entries", "500",
		"--maintenance-interval", "300ms", "--snapshot-retention", "2s", "--min-snapshots", "2",
		"--compact-min-files", "3", "--compact-small-file-bytes", "65536", "--orphan-age", "1h",
		// A job stuck on the store fails at this deadline and frees its
		// table for the next pass, as in production; the default (5 min)
		// outlasts the wait below. --pprof: see busyGoroutines.
		"--maintenance-timeout", "10s", "--pprof"}
	a, addrA := so.start("a", append(opts, "--http-addr", httpA)...)
	b, addrB := so.start("b", append(opts, "--http-addr", httpB)...)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rctx, stopReader := context.WithCancel(ctx)
	var reads, readErrs atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		snapshotReader(t, rctx, so.config(), &reads, &readErrs)
	}()

	srcs := make([]*resumingSource, 4)
	for i := range srcs {
		srcs[i] = newResumingSource("s3pg-"+string(rune('a'+i)), addrA, batchSize, 4)
	}
	onA, onB := srcs[:2], srcs[2:]
	var wgB sync.WaitGroup
	for _, s := range onB {
		s.addr = addrB
		wgB.Add(1)
		go func() { defer wgB.Done(); s.run(ctx, maxBatches) }()
	}
	ctxA, cancelA := context.WithCancel(ctx)
	var wgA sync.WaitGroup
	for _, s := range onA {
		wgA.Add(1)
		go func() { defer wgA.Done(); s.run(ctxA, maxBatches) }()
	}
	for ackedCount(onA) < len(onA)*batchSize*maxBatches/3 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	cancelA()
	wgA.Wait()
	if n := ackedCount(onA); n >= len(onA)*batchSize*maxBatches {
		t.Fatalf("a was killed only after its sources finished (%d entries acked)", n)
	} else {
		t.Logf("a killed with %d of its sources' %d entries acked", n, len(onA)*batchSize*maxBatches)
	}
	// a's sources move to b once a's lease expires (2 s).
	moveStart := time.Now()
	for _, s := range onA {
		s.addr = addrB
		wgA.Add(1)
		go func() { defer wgA.Done(); s.run(ctx, maxBatches) }()
	}
	wgA.Wait()
	wgB.Wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), so.logs("a", "b"))
	}
	t.Logf("a's sources finished on b %v after the kill", time.Since(moveStart).Round(time.Millisecond))
	// a restarts on its write-ahead log: the moved sources' batches in it
	// must not be committed again.
	a = startProcEnv(t, so.env, addrA, filepath.Join(so.dir, "a.log"), a.args...)
	t.Logf("a restarted: %d moved sources had uncommitted batches in its log",
		strings.Count(readLog(t, filepath.Join(so.dir, "a.log")), "source moved to another instance while this one was down"))
	for _, addr := range []string{addrA, addrB} {
		if r := flushRPC(t, addr); !r.GetSuccess() {
			t.Errorf("flush %s: %+v", addr, r)
		}
	}
	// Let maintenance compact and expire (snapshots older than 2 s). It
	// needs commits to work on: on a slow machine the sources' entries
	// can all land in two flushes (each table then has two snapshots and
	// two files, nothing to expire or compact), so a top-up source commits
	// a batch a round until maintenance has run.
	ran := func() bool {
		ma, mb := scrapeMetrics(t, httpA), scrapeMetrics(t, httpB)
		return ma["lakehouse_compaction_runs_total"]+mb["lakehouse_compaction_runs_total"] > 0 &&
			ma["lakehouse_expiry_snapshots_total"]+mb["lakehouse_expiry_snapshots_total"] > 0
	}
	topUp := newResumingSource("s3pg-top-up", addrB, batchSize, 1)
	var topUpBatches uint64
	for deadline := time.Now().Add(30 * time.Second); !ran() && time.Now().Before(deadline); {
		topUpBatches++
		if err := topUp.run(ctx, topUpBatches); err != nil {
			t.Fatalf("top-up source: %v", err)
		}
		if r := flushRPC(t, addrB); !r.GetSuccess() {
			t.Errorf("flush %s: %+v", addrB, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("top-up source: %d batches", topUpBatches)
	stopReader()
	<-readerDone
	ma, mb := scrapeMetrics(t, httpA), scrapeMetrics(t, httpB)
	for _, name := range []string{"lakehouse_compaction_runs_total", "lakehouse_expiry_snapshots_total",
		"lakehouse_maintenance_skipped_total", `lakehouse_flushes_total{result="failure"}`} {
		t.Logf("%s: a (restarted) %v, b %v", name, ma[name], mb[name])
	}
	if !ran() {
		t.Errorf("maintenance did not both compact and expire on either instance")
		for name, addr := range map[string]string{"a": httpA, "b": httpB} {
			t.Logf("instance %s, maintenance goroutines:\n%s", name, busyGoroutines(t, addr, "Maintain", "ompact", "expire", "rphan"))
		}
	}
	t.Logf("reader checked %d table snapshots (%d reads retried)", reads.Load(), readErrs.Load())
	if reads.Load() == 0 {
		t.Error("the reader never read a table")
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(60 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	stored := so.read()
	checkExactlyOnce(t, srcs, stored, maxBatches*batchSize)
	checkExactlyOnce(t, []*resumingSource{topUp}, stored, int(topUpBatches)*batchSize)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}
