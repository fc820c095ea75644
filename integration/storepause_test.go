//go:build unix

package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// TestPausedObjectStore pauses the S3-compatible store under a running
// `lakehouse serve` for several commit timeouts (SIGSTOP: connections are
// accepted by the kernel and never answered, the worst kind of outage) and
// checks that the service rides it out unattended:
//   - a flush on a stalled store fails within the commit timeout, instead of
//     hanging; the server reports RECOVERING with the error;
//   - sources keep getting acks (ok, or fallback: in the write-ahead log),
//     not silence;
//   - after SIGCONT the recovery loop commits everything, and every acked
//     entry is in the tables exactly once.
func TestPausedObjectStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	pausedStore(t, false)
}

// TestPausedObjectStoreDuringMaintenance pauses the store while table
// maintenance runs (every second, compaction and orphan cleanup included):
// maintenance takes the commit lock ingest commits need, so a maintenance
// pass hung on the store must not block ingest commits forever.
func TestPausedObjectStoreDuringMaintenance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	pausedStore(t, true)
}

func pausedStore(t *testing.T, maintenance bool) {
	const (
		sources       = 4
		batchSize     = 250
		before        = 12 // batches per source before the pause
		paused        = 18 // ...by the first failed flush
		during        = 24 // ...by the end of the pause
		total         = 36 // ...in all
		commitTimeout = 3 * time.Second
		pause         = 4 * commitTimeout
		// slack covers process scheduling on a loaded 2-core machine.
		slack = 4 * time.Second
	)
	s3 := startS3(t)
	s3.CreateBucket(t, "lake")
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	warehouse := "s3://lake/wh"
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", httpAddr,
		"--warehouse", warehouse, "--catalog-props", s3.CatalogProps(),
		"--commit-timeout", commitTimeout.String(), "--flush-interval", "1s", "--flush-entries", "2000",
		"--log-level", "info"}
	if maintenance {
		args = append(args, "--maintenance-interval", "1s", "--maintenance-timeout", commitTimeout.String(),
			"--compact-min-files", "2", "--orphan-interval", "1s", "--orphan-age", "1h")
	} else {
		args = append(args, "--no-maintenance")
	}
	p := startProcEnv(t, s3.Env(), addr, logPath, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := lakehousev1.NewCDCServiceClient(cc)
	status := func() *lakehousev1.ServerStatus {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := api.GetStatus(c, &lakehousev1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("GetStatus (it must answer while the store is paused): %v\n%s", err, readLog(t, logPath))
		}
		return r.GetStatus()
	}
	flush := func(limit time.Duration) (*lakehousev1.FlushResult, time.Duration) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		start := time.Now()
		r, err := api.Flush(c, &lakehousev1.FlushRequest{})
		if err != nil {
			t.Fatalf("flush did not answer within %v: %v\n%s", limit, err, readLog(t, logPath))
		}
		return r.GetResult(), time.Since(start)
	}

	// Before: stream, and commit to the store.
	srcs, wait := streamSources(ctx, "pause-src", addr, sources, batchSize, before)
	wait()
	if res, _ := flush(time.Minute); !res.GetSuccess() {
		t.Fatalf("flush before the pause: %v\n%s", res, readLog(t, logPath))
	}
	if maintenance {
		// Let maintenance passes run against the store, so that one is
		// under way when it stops.
		time.Sleep(1500 * time.Millisecond)
	}

	// During: the store stops answering.
	m0 := scrapeMetrics(t, httpAddr)
	s3.Pause(t)
	pausedAt := time.Now()
	t.Logf("store paused with %d entries acked", ackedCount(srcs))
	// Batches are still acknowledged: the store is not needed for that.
	runSources(ctx, srcs, paused)()
	// A flush on request fails within its bound: at most one flush already
	// running (one commit timeout), then this one (another).
	res, took := flush(2*commitTimeout + slack)
	t.Logf("flush during the pause: %v after %v", res.GetError(), took.Round(time.Millisecond))
	if res.GetSuccess() {
		t.Errorf("a flush succeeded with the store paused")
	}
	if !res.GetUsedFallback() {
		t.Errorf("failed flush did not report the fallback: %v", res)
	}
	st := status()
	if st.GetState() != lakehousev1.ParentState_PARENT_STATE_RECOVERING || !st.GetRecovery().GetActive() ||
		st.GetRecovery().GetLastError() == "" {
		t.Errorf("status during the pause: state %v, recovery %v", st.GetState(), st.GetRecovery())
	}
	t.Logf("status during the pause: state %v, recovery %v", st.GetState(), st.GetRecovery())
	waitDuring := runSources(ctx, srcs, during)
	// The sources send more while the store is paused and the recovery
	// loop is active: each batch is acknowledged (fallback: in the
	// write-ahead log), not left hanging.
	for ackedCount(srcs) < sources*batchSize*during {
		if time.Since(pausedAt) > pause {
			t.Fatalf("sources got %d of %d acks in %v of store pause: clients hang on a stalled store\n%s",
				ackedCount(srcs), sources*batchSize*during, time.Since(pausedAt), readLog(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitDuring()
	t.Logf("sources acked up to batch %d %v into the pause", during, time.Since(pausedAt).Round(time.Millisecond))

	// The flusher keeps going: later flushes fail too, each within the bound.
	time.Sleep(time.Until(pausedAt.Add(pause)))
	m1 := scrapeMetrics(t, httpAddr)
	failedFlushes := m1[`lakehouse_flushes_total{result="failure"}`] - m0[`lakehouse_flushes_total{result="failure"}`]
	failedStages := m1[`lakehouse_stages_total{result="failure"}`] - m0[`lakehouse_stages_total{result="failure"}`]
	fallbackAcks := m1[`lakehouse_batches_total{result="fallback"}`] - m0[`lakehouse_batches_total{result="fallback"}`]
	okAcks := m1[`lakehouse_batches_total{result="ok"}`] - m0[`lakehouse_batches_total{result="ok"}`]
	t.Logf("during the %v pause: %v failed flushes, %v failed stages, %v ok and %v fallback acks",
		pause, failedFlushes, failedStages, okAcks, fallbackAcks)
	if failedFlushes < 2 {
		t.Errorf("%v failed flushes during a %v pause with a %v commit timeout: flushes hang", failedFlushes, pause, commitTimeout)
	}
	if fallbackAcks < 1 {
		t.Errorf("no fallback ack during the pause")
	}

	// After: the store answers again; the recovery loop commits everything.
	s3.Resume(t)
	resumedAt := time.Now()
	runSources(ctx, srcs, total)()
	var recoveredIn time.Duration
	for {
		st := status()
		if !st.GetRecovery().GetActive() && st.GetBuffer().GetBatchCount() == 0 && st.GetStaged().GetBatchCount() == 0 {
			drained := true
			for _, ss := range st.GetSources() {
				drained = drained && ss.GetPersistedSequence() == total
			}
			if drained {
				recoveredIn = time.Since(resumedAt)
				break
			}
		}
		if time.Since(resumedAt) > 90*time.Second {
			t.Fatalf("not drained 90 s after the store resumed: %v\n%s", st, readLog(t, logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("everything persisted %v after the store resumed", recoveredIn.Round(time.Millisecond))
	logs := readLogFull(t, logPath)
	if !strings.Contains(logs, "storage recovered") {
		t.Errorf("the log does not say storage recovered")
	}
	if maintenance {
		// Maintenance on the paused store failed (timed out) rather than
		// hung, and runs again once the store answers.
		const runs, failures = "lakehouse_maintenance_runs_total", "lakehouse_maintenance_failures_total"
		time.Sleep(2 * time.Second)
		m2 := scrapeMetrics(t, httpAddr)
		t.Logf("maintenance: during the pause %v runs, %v failed; after it %v runs, %v failed",
			m1[runs]-m0[runs], m1[failures]-m0[failures], m2[runs]-m1[runs], m2[failures]-m1[failures])
		// A pass under way when the store stopped fails with its timeout
		// while the store is still paused, wherever it was (orphan
		// cleanup's directory walk included: it listed under
		// context.Background and returned only when the store answered).
		if m1[failures]-m0[failures] < 1 {
			t.Errorf("no maintenance pass failed during the pause: they hang")
		}
		if m2[runs]-m2[failures] <= m1[runs]-m1[failures] {
			t.Errorf("no maintenance pass succeeded after the pause")
		}
	}
	if err := p.stop(time.Minute); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	if !maintenance {
		startWithStalledStore(t, s3, args, commitTimeout+slack+10*time.Second)
	}
	stored := readIcebergConfig(t, iceberg.Config{DataDir: dataDir, Warehouse: warehouse, Properties: s3.Props()})
	checkExactlyOnce(t, srcs, stored, total*batchSize)
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}

// runSources runs every source until maxBatches are acked (or ctx ends);
// wait blocks until they all have returned.
func runSources(ctx context.Context, srcs []*resumingSource, maxBatches uint64) (wait func()) {
	var wg sync.WaitGroup
	for _, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, maxBatches)
		}()
	}
	return wg.Wait
}

// startWithStalledStore starts `lakehouse serve` with the store paused: the
// start-up reads the tables' watermarks, which must fail within the bound
// (the commit timeout, plus process start) with an error and a non-zero exit
// rather than hang. A supervisor then restarts it.
func startWithStalledStore(t *testing.T, s3 *s3Proc, args []string, limit time.Duration) {
	t.Helper()
	s3.Pause(t)
	defer s3.Resume(t)
	cmd := exec.Command(lakehouseBin(t), args...)
	cmd.Env = append(os.Environ(), s3.Env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("start with the store paused: %v after %v", err, time.Since(start).Round(time.Millisecond))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(out.String(), "watermarks") {
			t.Errorf("start with the store paused: %v, want a failure reading the watermarks\n%s", err, out.String())
		}
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("start with the store paused still running after %v\n%s", limit, out.String())
	}
}
