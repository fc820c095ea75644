//go:build linux

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/testing/tmpfs"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory, unmounted
// when the test ends, or skips the test when it cannot mount.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir, err := tmpfs.Mount(t, size)
	if err != nil {
		t.Skipf("skipping: cannot mount a %s tmpfs to fill (%v); the full-disk test needs root or CAP_SYS_ADMIN "+
			"(server/wal's fault-injection tests cover the log without a real filesystem)", size, err)
	}
	return dir
}

// TestDiskFullRecoversWithoutRestart runs `lakehouse serve` with its data
// directory (write-ahead log, SQLite catalog, and the Iceberg warehouse) on a
// small tmpfs, fills the filesystem while four sources stream, frees it, and
// checks that the same process recovers by itself: the write-ahead log and
// the commits fail during the episode, the sources are told to retry
// (buffer_full with a retry delay, no internal_error), and afterwards every
// acked entry is in the Iceberg tables exactly once.
//
// In "shared" everything is on the tmpfs, as with the defaults, and the
// Parquet writes fail before the catalog is reached. In "catalog" the
// warehouse is elsewhere, so that a commit writes its data and metadata
// files and then fails in the embedded SQLite catalog ("database or disk is
// full"): the storage recovery loop must get it through.
func TestDiskFullRecoversWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	t.Run("shared", func(t *testing.T) { diskFull(t, false) })
	t.Run("catalog", func(t *testing.T) { diskFull(t, true) })
}

func diskFull(t *testing.T, warehouseElsewhere bool) {
	mnt := mountTmpfs(t, "48m")
	const (
		sources    = 4
		batchSize  = 50
		maxBatches = 400
	)
	dir := t.TempDir()
	dataDir := filepath.Join(mnt, "data")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", httpAddr,
		"--flush-interval", "300ms", "--flush-entries", "3000", "--wal-max-bytes", "16777216",
		"--no-maintenance", "--log-level", "info"}
	warehouse := ""
	if warehouseElsewhere {
		warehouse = "file://" + filepath.Join(dir, "warehouse")
		args = append(args, "--warehouse", warehouse)
	}
	p := startProc(t, addr, logPath, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcs, wait := streamSources(ctx, "full-src", addr, sources, batchSize, maxBatches)

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := lakehousev1.NewCDCServiceClient(cc)
	status := func() *lakehousev1.ServerStatus {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := api.GetStatus(c, &lakehousev1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("GetStatus: %v\n%s", err, readLog(t, logPath))
		}
		return r.GetStatus()
	}

	// Let the sources get going, then fill the disk for a while.
	for ackedCount(srcs) < sources*batchSize*40 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	filler, n := tmpfs.Fill(t, mnt)
	fullAt := time.Now()
	t.Logf("disk full (filler %d MiB) with %d entries acked", n>>20, ackedCount(srcs))
	var sawFailed, sawRecovering bool
	var during *lakehousev1.ServerStatus
	for time.Since(fullAt) < 4*time.Second {
		st := status()
		if st.GetWal().GetState() == lakehousev1.WALState_WAL_STATE_FAILED {
			sawFailed, during = true, st
		}
		if st.GetState() == lakehousev1.ParentState_PARENT_STATE_RECOVERING {
			sawRecovering = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	ackedFull := ackedCount(srcs)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	t.Logf("disk freed after %v with %d entries acked", freedAt.Sub(fullAt).Round(time.Millisecond), ackedFull)
	if !sawFailed {
		t.Errorf("GetStatus never showed WAL_STATE_FAILED while the disk was full")
	} else {
		t.Logf("status while full: state %v, wal %v, recovery %v", during.GetState(), during.GetWal(), during.GetRecovery())
	}
	if !sawRecovering {
		t.Errorf("GetStatus never showed PARENT_STATE_RECOVERING while the disk was full")
	}

	// The same process recovers: the log accepts again, and the sources finish.
	var recoveredIn time.Duration
	for {
		st := status()
		if st.GetWal().GetState() == lakehousev1.WALState_WAL_STATE_OK && ackedCount(srcs) > ackedFull {
			recoveredIn = time.Since(freedAt)
			break
		}
		if time.Since(freedAt) > 60*time.Second {
			t.Fatalf("no recovery 60 s after freeing the disk: %v\n%s", st.GetWal(), readLog(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("accepting again %v after the disk was freed", recoveredIn.Round(time.Millisecond))
	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	if !p.alive() {
		t.Fatalf("the server exited\n%s", readLog(t, logPath))
	}

	m := scrapeMetrics(t, httpAddr)
	t.Logf("metrics: wal failures %v, recoveries %v, failed %v; flushes failed %v, succeeded %v; batches nacked buffer_full %v",
		m["lakehouse_wal_failures_total"], m["lakehouse_wal_recoveries_total"], m["lakehouse_wal_failed"],
		m[`lakehouse_flushes_total{result="failure"}`], m[`lakehouse_flushes_total{result="success"}`],
		m[`lakehouse_batches_total{result="nack_buffer_full"}`])
	if m["lakehouse_wal_failures_total"] < 1 || m["lakehouse_wal_recoveries_total"] < 1 || m["lakehouse_wal_failed"] != 0 {
		t.Errorf("metrics do not show the WAL failure and its recovery")
	}
	st := status()
	if st.GetWal().GetFailures() < 1 || st.GetWal().GetRecoveries() < 1 || st.GetWal().GetLastError() == "" {
		t.Errorf("status after recovery: %v", st.GetWal())
	}
	// Commits recover too, in the same process: a flush on request
	// succeeds and every source's batches are persisted.
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Minute)
		r, err := api.Flush(c, &lakehousev1.FlushRequest{})
		cancel()
		if err != nil {
			t.Fatalf("flush after the episode: %v", err)
		}
		if r.GetResult().GetSuccess() {
			break
		}
		if time.Since(freedAt) > 2*time.Minute {
			t.Fatalf("flushes still fail 2 min after the disk was freed: %v\n%s", r.GetResult(), readLog(t, logPath))
		}
		time.Sleep(500 * time.Millisecond)
	}
	st = status()
	if st.GetRecovery().GetActive() {
		t.Errorf("storage recovery still active after a successful flush: %v", st.GetRecovery())
	}
	for _, ss := range st.GetSources() {
		if ss.GetPersistedSequence() != maxBatches {
			t.Errorf("%s persisted up to batch %d, want %d", ss.GetSourceId(), ss.GetPersistedSequence(), maxBatches)
		}
	}

	var nacks = map[lakehousev1.NackReason]int{}
	noDelay := 0
	for _, s := range srcs {
		s.mu.Lock()
		for r, c := range s.nacks {
			nacks[r] += c
		}
		noDelay += s.noDelay
		s.mu.Unlock()
	}
	t.Logf("nacks received by the sources: %v", nacks)
	if nacks[lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR] != 0 {
		t.Errorf("%d internal_error nacks, want none (the sources must be told to retry)", nacks[lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR])
	}
	if nacks[lakehousev1.NackReason_NACK_REASON_BUFFER_FULL] == 0 {
		t.Errorf("no buffer_full nack during the episode")
	}
	if noDelay != 0 {
		t.Errorf("%d retryable nacks without a retry delay", noDelay)
	}
	logs := readLogFull(t, logPath)
	sqliteFull := strings.Contains(logs, "database or disk is full")
	t.Logf("SQLite catalog hit the full disk: %v; Parquet writes hit it: %v",
		sqliteFull, strings.Contains(logs, "write data files"))
	if warehouseElsewhere && !sqliteFull {
		t.Errorf("the SQLite catalog never failed on the full disk: the test did not test it")
	}

	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	checkExactlyOnce(t, srcs, readIceberg(t, dataDir, warehouse), maxBatches*batchSize)
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}
