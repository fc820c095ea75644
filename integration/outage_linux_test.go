//go:build linux

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/bench"
	"github.com/dot-do/lakehouse-rpc/internal/testing/tmpfs"
)

// w1EntryBytes is about what a W1 entry takes in a batch frame.
const w1EntryBytes = 210

// outagePlan is the shape of TestStorageOutageAbsorbedByTheLog's run.
type outagePlan struct {
	outage     time.Duration
	rate       float64 // entries/s offered by all sources together; 0: closed loop
	sources    int
	batchSize  int
	window     int    // batches in flight per source
	maxMem     int64  // --max-buffer-bytes
	flushBytes int64  // --flush-bytes
	tmpfs      string // size of the warehouse filesystem
	maxBatches uint64 // per source
}

// planOutage reads LAKEHOUSE_OUTAGE_SECONDS and LAKEHOUSE_OUTAGE_RATE.
//
// Without a rate (the quick default), four closed-loop sources send 200-entry
// batches against a 2 MiB memory buffer: the log absorbs the outage at
// whatever rate the machine makes. With LAKEHOUSE_OUTAGE_RATE=N, eight
// open-loop sources offer N entries/s in all, in W1's 1,000-entry batches of
// pre-encoded frames (the generator costs next to nothing), from the start
// to 10 s after the outage, against the server's default buffer sizes.
func planOutage(t *testing.T) outagePlan {
	p := outagePlan{outage: 5 * time.Second, sources: 4, batchSize: 200, window: 4, maxMem: 2 << 20, flushBytes: 1 << 20, tmpfs: "64m"}
	if v := os.Getenv("LAKEHOUSE_OUTAGE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("LAKEHOUSE_OUTAGE_SECONDS=%q: want a positive number of seconds", v)
		}
		p.outage = time.Duration(n) * time.Second
	}
	if v := os.Getenv("LAKEHOUSE_OUTAGE_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			t.Fatalf("LAKEHOUSE_OUTAGE_RATE=%q: want a positive number of entries/s", v)
		}
		p.rate, p.sources, p.batchSize, p.window = r, 8, 1000, 8
		p.maxMem, p.flushBytes = 128<<20, 32<<20 // the defaults
		// About 10 s before the outage (server start, warm-up), the outage,
		// 10 s after it.
		total := r * (p.outage + 20*time.Second).Seconds()
		p.maxBatches = uint64(total) / uint64(p.sources*p.batchSize)
	} else {
		// Enough batches to keep streaming through the outage at this
		// machine's pace (each source has 4 batches in flight).
		p.maxBatches = uint64(300 + 60*p.outage/time.Second)
	}
	// The warehouse must hold the backlog's staged files once freed: a
	// long outage's backlog is thousands of files.
	if p.outage > 10*time.Second || p.rate > 0 {
		p.tmpfs = "1g"
	}
	return p
}

// TestStorageOutageAbsorbedByTheLog runs `lakehouse serve` with its Iceberg
// warehouse on a small tmpfs and its data directory (write-ahead log, SQLite
// catalog) elsewhere, fills the tmpfs while the sources stream, and frees it.
// During the outage the sources send many times the memory buffer; the log
// (--wal-max-bytes 4 GiB) absorbs it: no batch is refused buffer_full, and
// the server's buffer memory stays within --max-buffer-bytes plus one flush
// (--flush-bytes). Afterwards the backlog is read back from the log and
// committed: every source's batches are persisted and every acked entry is in
// the tables exactly once.
//
// The outage lasts 5 s; LAKEHOUSE_OUTAGE_SECONDS sets another length, and
// LAKEHOUSE_OUTAGE_RATE an offered rate (planOutage). The figure:
//
//	LAKEHOUSE_OUTAGE_SECONDS=60 LAKEHOUSE_OUTAGE_RATE=100000 go test ./integration -run TestStorageOutageAbsorbedByTheLog -v
//
// With a rate, the test fails unless the sources' acked rate during the
// outage reached 95% of the offered rate, and says whether the generator or
// the server fell behind.
func TestStorageOutageAbsorbedByTheLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	plan := planOutage(t)
	mnt := mountTmpfs(t, plan.tmpfs)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	warehouse := "file://" + filepath.Join(mnt, "warehouse")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	p := startProc(t, addr, logPath, "serve", "--data-dir", dataDir, "--warehouse", warehouse,
		"--grpc-addr", addr, "--http-addr", httpAddr, "--flush-interval", "500ms",
		"--max-buffer-bytes", strconv.FormatInt(plan.maxMem, 10), "--flush-bytes", strconv.FormatInt(plan.flushBytes, 10),
		"--wal-max-bytes", strconv.Itoa(4<<30), "--no-maintenance", "--log-level", "info")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+2*plan.outage)
	defer cancel()
	srcs, wait := startOutageSources(ctx, t, plan, addr)

	warm := plan.sources * plan.batchSize * 50
	if plan.rate > 0 {
		warm = int(plan.rate * 3) // 3 s at the rate
	}
	for ackedCount(srcs) < warm && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	filler, n := tmpfs.Fill(t, mnt)
	fullAt := time.Now()
	ackedAtFull, sentAtFull := ackedCount(srcs), sentCount(srcs)
	t.Logf("warehouse full (filler %d MiB) with %d entries acked", n>>20, ackedAtFull)
	var peak, logOnly, rss float64
	sample := func() map[string]float64 {
		m := scrapeMetrics(t, httpAddr)
		peak = max(peak, m["lakehouse_buffer_bytes"])
		logOnly = max(logOnly, m["lakehouse_buffer_log_only_bytes"])
		rss = max(rss, m["process_resident_memory_bytes"])
		return m
	}
	recovering := false
	for time.Since(fullAt) < plan.outage {
		recovering = recovering || sample()["lakehouse_recovering"] == 1
		time.Sleep(100 * time.Millisecond)
	}
	outageSecs := time.Since(fullAt).Seconds()
	ackedDuring, sentDuring := ackedCount(srcs)-ackedAtFull, sentCount(srcs)-sentAtFull
	// What the backlog is: each source's batches acked by now.
	backlog := ackedBatches(srcs)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	t.Logf("warehouse freed after %.1fs: %d entries acked during the outage (%.0f/s), %d first sent (%.0f/s); buffer memory peak %.0f bytes, %.0f held only in the log",
		outageSecs, ackedDuring, float64(ackedDuring)/outageSecs, sentDuring, float64(sentDuring)/outageSecs, peak, logOnly)
	if !recovering {
		t.Errorf("commits never failed: the outage did not happen")
	}
	if plan.rate > 0 {
		checkOfferedRate(t, plan, srcs, ackedDuring, outageSecs)
	} else if ackedDuring*w1EntryBytes < 4*int(plan.maxMem) {
		// The log absorbed several memory buffers.
		t.Errorf("only %d entries acked during the outage: the sources were held back", ackedDuring)
	}
	rssOutage := rss

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := lakehousev1.NewCDCServiceClient(cc)
	// Drained (measured with a rate; the quick mode's flushes on request
	// below find the storage back sooner): every batch acked by the end of
	// the outage is persisted. The server notices the storage is back at
	// its recovery loop's next attempt (a backoff from 1 s, doubling).
	var recoveredAt time.Time
	for plan.rate > 0 {
		if sample()["lakehouse_recovering"] == 0 && recoveredAt.IsZero() {
			recoveredAt = time.Now()
		}
		if persistedUpTo(ctx, t, api, backlog) {
			t.Logf("drained: the outage's backlog persisted %.1fs after the warehouse was freed (commits recovered after %.1fs)",
				time.Since(freedAt).Seconds(), recoveredAt.Sub(freedAt).Seconds())
			break
		}
		if time.Since(freedAt) > 3*time.Minute || ctx.Err() != nil {
			t.Fatalf("the outage's backlog is not persisted %v after the warehouse was freed\n%s", time.Since(freedAt).Round(time.Second), readLog(t, logPath))
		}
		time.Sleep(250 * time.Millisecond)
	}

	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	// Commits recover by themselves; a flush on request then commits the rest.
	for freed := time.Now(); ; {
		sample()
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
	if peak > float64(plan.maxMem+plan.flushBytes) {
		t.Errorf("buffer memory peaked at %.0f bytes, cap %d + one flush %d", peak, plan.maxMem, plan.flushBytes)
	}
	// Bounded, whatever the backlog: the server's soft memory limit is the
	// buffer cap + 384 MiB (--memory-limit), which the garbage collector
	// lets the heap grow to; one flush's read-back and Parquet writers may
	// go beyond it for a while.
	if limit := float64(plan.maxMem + plan.flushBytes + 512<<20); rss > limit {
		t.Errorf("server RSS peaked at %.0f MiB, above the buffer cap + one flush + 512 MiB (%.0f MiB)", rss/(1<<20), limit/(1<<20))
	}
	want := map[string]uint64{}
	for _, s := range srcs {
		want[s.id] = plan.maxBatches
	}
	if !persistedUpTo(ctx, t, api, want) {
		t.Errorf("not every source is persisted up to its last batch %d", plan.maxBatches)
	}
	m := scrapeMetrics(t, httpAddr)
	readBack := m["lakehouse_wal_read_back_bytes_total"]
	t.Logf("metrics: read back from the log %.0f bytes; flushes failed %v, succeeded %v; stages failed %v; nack_buffer_full %v; server RSS peak %.0f MiB during the outage, %.0f MiB in all",
		readBack, m[`lakehouse_flushes_total{result="failure"}`], m[`lakehouse_flushes_total{result="success"}`],
		m[`lakehouse_stages_total{result="failure"}`], m[`lakehouse_batches_total{result="nack_buffer_full"}`], rssOutage/(1<<20), rss/(1<<20))
	// What the outage brought in beyond what memory may hold came back from
	// the log, not from memory.
	if beyond := float64(ackedDuring*w1EntryBytes) - float64(plan.maxMem+plan.flushBytes); readBack == 0 || readBack < beyond {
		t.Errorf("%.0f bytes read back from the log, for about %.0f bytes acked during the outage beyond the memory buffer", readBack, beyond)
	}
	nacks := map[lakehousev1.NackReason]int{}
	for _, s := range srcs {
		s.mu.Lock()
		for r, c := range s.nacks {
			nacks[r] += c
		}
		s.mu.Unlock()
	}
	results := map[string]float64{}
	for k, v := range m {
		if r, ok := strings.CutPrefix(k, "lakehouse_batches_total{result="); ok {
			results[strings.Trim(r, `"}`)] = v
		}
	}
	t.Logf("nacks received by the sources, by reason: %v; the server's batches by result: %v", nacks, results)
	if len(nacks) != 0 {
		t.Errorf("nacks during the outage: %v, want none", nacks)
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	stored := readIceberg(t, dataDir, warehouse)
	checkExactlyOnce(t, srcs, stored, int(plan.maxBatches)*plan.batchSize)
	t.Logf("exactly once: %d rows read back from the tables for %d acked entries", len(stored), ackedCount(srcs))
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}

// startOutageSources starts the plan's sources: closed-loop resuming sources,
// or with a rate, paced ones sending pooled frames.
func startOutageSources(ctx context.Context, t *testing.T, plan outagePlan, addr string) ([]*resumingSource, func()) {
	if plan.rate == 0 {
		return streamSources(ctx, "outage-src", addr, plan.sources, plan.batchSize, plan.maxBatches)
	}
	pace := time.Duration(float64(time.Second) * float64(plan.sources*plan.batchSize) / plan.rate)
	start := time.Now()
	srcs := make([]*resumingSource, plan.sources)
	for i := range srcs {
		s := newResumingSource(fmt.Sprintf("outage-src-%d", i), addr, plan.batchSize, plan.window)
		pool, err := bench.NewFramePool(s.id, plan.batchSize, "")
		if err != nil {
			t.Fatal(err)
		}
		// Sources spread over one pace.
		s.pool, s.pace, s.start = pool, pace, start.Add(pace*time.Duration(i)/time.Duration(plan.sources))
		srcs[i] = s
	}
	done := make(chan struct{}, len(srcs))
	for _, s := range srcs {
		go func() {
			defer func() { done <- struct{}{} }()
			s.run(ctx, plan.maxBatches)
		}()
	}
	return srcs, func() {
		for range srcs {
			<-done
		}
	}
}

// checkOfferedRate fails the test unless the entries acked during the outage
// reached 95% of the offered rate, saying which side fell behind.
func checkOfferedRate(t *testing.T, plan outagePlan, srcs []*resumingSource, ackedDuring int, secs float64) {
	t.Helper()
	achieved := float64(ackedDuring) / secs
	var lag time.Duration
	for _, s := range srcs {
		s.mu.Lock()
		lag = max(lag, s.maxLag)
		s.mu.Unlock()
	}
	t.Logf("offered %.0f entries/s, acked %.0f entries/s during the outage; a first send came at most %v after its scheduled time",
		plan.rate, achieved, lag.Round(time.Millisecond))
	if achieved < 0.95*plan.rate {
		t.Errorf("the offered rate was not reached: %.0f entries/s acked during the outage, %.0f offered "+
			"(a send waited up to %v for its window of %d batches: the server's acks, or this machine, fell behind)",
			achieved, plan.rate, lag.Round(time.Millisecond), plan.window)
	}
}

// sentCount is the number of entries the sources sent at least once.
func sentCount(srcs []*resumingSource) int {
	n := 0
	for _, s := range srcs {
		s.mu.Lock()
		n += int(s.nextSeq-1) * s.batchSize
		s.mu.Unlock()
	}
	return n
}

// ackedBatches is, per source, the number of its batches acked (acks come in
// order: batches 1 to that number).
func ackedBatches(srcs []*resumingSource) map[string]uint64 {
	out := map[string]uint64{}
	for _, s := range srcs {
		s.mu.Lock()
		out[s.id] = uint64(len(s.acked) / s.batchSize)
		s.mu.Unlock()
	}
	return out
}

// persistedUpTo says whether every source in want has its batches up to
// want[source] persisted, by the server's status.
func persistedUpTo(ctx context.Context, t *testing.T, api lakehousev1.CDCServiceClient, want map[string]uint64) bool {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sr, err := api.GetStatus(c, &lakehousev1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, ss := range sr.GetStatus().GetSources() {
		got[ss.GetSourceId()] = ss.GetPersistedSequence()
	}
	for id, w := range want {
		if got[id] < w {
			return false
		}
	}
	return true
}
