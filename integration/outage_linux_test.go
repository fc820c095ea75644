//go:build linux

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// TestStorageOutageAbsorbedByTheLog runs `lakehouse serve` with its Iceberg
// warehouse on a small tmpfs and its data directory (write-ahead log, SQLite
// catalog) elsewhere, fills the tmpfs while four sources stream, and frees it.
// During the outage the sources send many times the memory buffer; the log
// absorbs it: no batch is refused buffer_full, and the server's buffer memory
// stays within --max-buffer-bytes plus one flush (--flush-bytes). Afterwards
// the backlog is read back from the log and committed: every source's batches
// are persisted and every acked entry is in the tables exactly once.
//
// The outage lasts 5 s; LAKEHOUSE_OUTAGE_SECONDS sets another length (60 for
// the figure).
func TestStorageOutageAbsorbedByTheLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	outage := 5 * time.Second
	if v := os.Getenv("LAKEHOUSE_OUTAGE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("LAKEHOUSE_OUTAGE_SECONDS=%q: want a positive number of seconds", v)
		}
		outage = time.Duration(n) * time.Second
	}
	const (
		sources    = 4
		batchSize  = 200 // about 42 KB a batch
		maxMem     = 2 << 20
		flushBytes = 1 << 20
	)
	// Enough batches to keep streaming through the outage at this
	// machine's pace (each source has 4 batches in flight).
	maxBatches := uint64(300 + 60*outage/time.Second)
	// The warehouse must hold the backlog's staged files once freed: a
	// long outage's backlog, staged one 1 MiB flush at a time, is thousands
	// of small files.
	size := "64m"
	if outage > 10*time.Second {
		size = "512m"
	}
	mnt := mountTmpfs(t, size)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	warehouse := "file://" + filepath.Join(mnt, "warehouse")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	p := startProc(t, addr, logPath, "serve", "--data-dir", dataDir, "--warehouse", warehouse,
		"--grpc-addr", addr, "--http-addr", httpAddr, "--flush-interval", "500ms",
		"--max-buffer-bytes", strconv.Itoa(maxMem), "--flush-bytes", strconv.Itoa(flushBytes),
		"--wal-max-bytes", strconv.Itoa(4<<30), "--no-maintenance", "--log-level", "info")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+2*outage)
	defer cancel()
	srcs, wait := streamSources(ctx, "outage-src", addr, sources, batchSize, maxBatches)

	for ackedCount(srcs) < sources*batchSize*50 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	filler, n := fillDisk(t, mnt)
	fullAt := time.Now()
	ackedAtFull := ackedCount(srcs)
	t.Logf("warehouse full (filler %d MiB) with %d entries acked", n>>20, ackedAtFull)
	var peak, logOnly float64
	recovering := false
	for time.Since(fullAt) < outage {
		m := scrapeMetrics(t, httpAddr)
		peak = max(peak, m["lakehouse_buffer_bytes"])
		logOnly = max(logOnly, m["lakehouse_buffer_log_only_bytes"])
		recovering = recovering || m["lakehouse_recovering"] == 1
		time.Sleep(100 * time.Millisecond)
	}
	ackedDuring := ackedCount(srcs) - ackedAtFull
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	t.Logf("warehouse freed after %v: %d entries acked during the outage; buffer memory peak %.0f bytes, %.0f held only in the log",
		time.Since(fullAt).Round(time.Millisecond), ackedDuring, peak, logOnly)
	if !recovering {
		t.Errorf("commits never failed: the outage did not happen")
	}
	// About 210 bytes per entry: the log absorbed several memory buffers.
	if ackedDuring*210 < 4*maxMem {
		t.Errorf("only %d entries acked during the outage: the sources were held back", ackedDuring)
	}
	if logOnly < maxMem {
		t.Errorf("at most %.0f bytes held only in the log: memory absorbed the outage", logOnly)
	}

	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	// Commits recover by themselves; a flush on request then commits the rest.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := lakehousev1.NewCDCServiceClient(cc)
	for freed := time.Now(); ; {
		m := scrapeMetrics(t, httpAddr)
		peak = max(peak, m["lakehouse_buffer_bytes"])
		c, cancel := context.WithTimeout(ctx, 2*time.Minute)
		r, err := api.Flush(c, &lakehousev1.FlushRequest{})
		cancel()
		if err != nil {
			t.Fatalf("flush after the outage: %v", err)
		}
		if r.GetResult().GetSuccess() {
			break
		}
		if time.Since(freed) > 2*time.Minute {
			t.Fatalf("flushes still fail 2 min after the outage: %v\n%s", r.GetResult(), readLog(t, logPath))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if peak > maxMem+flushBytes {
		t.Errorf("buffer memory peaked at %.0f bytes, cap %d + one flush %d", peak, maxMem, flushBytes)
	}
	c, cancelStatus := context.WithTimeout(ctx, 10*time.Second)
	sr, err := api.GetStatus(c, &lakehousev1.GetStatusRequest{})
	cancelStatus()
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range sr.GetStatus().GetSources() {
		if ss.GetPersistedSequence() != maxBatches {
			t.Errorf("%s persisted up to batch %d, want %d", ss.GetSourceId(), ss.GetPersistedSequence(), maxBatches)
		}
	}
	m := scrapeMetrics(t, httpAddr)
	t.Logf("metrics: read back from the log %.0f bytes; flushes failed %v, succeeded %v; nack_buffer_full %v",
		m["lakehouse_wal_read_back_bytes_total"], m[`lakehouse_flushes_total{result="failure"}`],
		m[`lakehouse_flushes_total{result="success"}`], m[`lakehouse_batches_total{result="nack_buffer_full"}`])
	if m["lakehouse_wal_read_back_bytes_total"] == 0 {
		t.Errorf("nothing was read back from the log")
	}
	nacks := map[lakehousev1.NackReason]int{}
	for _, s := range srcs {
		s.mu.Lock()
		for r, c := range s.nacks {
			nacks[r] += c
		}
		s.mu.Unlock()
	}
	if len(nacks) != 0 {
		t.Errorf("nacks during the outage: %v, want none", nacks)
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	checkExactlyOnce(t, srcs, readIceberg(t, dataDir, warehouse), int(maxBatches)*batchSize)
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}
