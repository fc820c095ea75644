package integration

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	iceberggo "github.com/apache/iceberg-go"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// TestMaintenanceRacingIngest runs the server as a process with commits,
// compaction and snapshot expiry all running every few hundred
// milliseconds while four sources stream at full rate. The first process
// exits abruptly in the middle of a compaction (its files written, not
// committed), as kill -9 would; the sources resume on the restarted one.
// Meanwhile a reader in this process checks every snapshot it sees: no
// duplicate and no missing row. At the end every acked entry is stored
// exactly once, no flush failed, compaction and expiry did run, and a
// one-shot `lakehouse maintain` removes the dead compaction's orphan files:
// every data file left on disk is referenced by the table.
func TestMaintenanceRacingIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	const (
		sources    = 4
		batchSize  = 50
		maxBatches = 1000
	)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", httpAddr,
		"--flush-interval", "300ms", "--flush-entries", "500", "--log-level", "warn",
		"--maintenance-interval", "300ms", "--snapshot-retention", "2s", "--min-snapshots", "2",
		"--compact-min-files", "3", "--compact-small-file-bytes", "65536", "--orphan-age", "1h"}
	p := startProcEnv(t, []string{exitCompactionFaultEnv + "=2"}, addr, logPath, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Paced, so that ingest lasts about 8 s and compactions commit while it
	// runs: unpaced and without the race detector, the sources sent
	// everything in 1.5 s, two flushes, and no compaction ever committed.
	srcs, wait := streamSourcesPaced(ctx, "maint-src", addr, sources, batchSize, maxBatches, 8*time.Millisecond)
	rctx, stopReader := context.WithCancel(ctx)
	var reads, readErrs atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		snapshotReader(t, rctx, iceberg.Config{DataDir: dataDir}, &reads, &readErrs)
	}()

	// The first process exits at its third compaction commit.
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the compaction fault never fired\n%s", readLog(t, logPath))
	}
	if !strings.Contains(readLog(t, logPath), "fault injection: exiting now") {
		t.Fatalf("the server exited without the fault: %v\n%s", p.err, readLog(t, logPath))
	}
	t.Logf("server exited in a compaction after %d acked entries; restarting", ackedCount(srcs))
	p = startProc(t, addr, logPath, args...)

	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	// Maintenance passes run every 300 ms; wait until the restarted server
	// has both compacted and expired (expiry needs snapshots older than 2 s)
	// and its passes have reached every table (merges pause for commits, so
	// a pass can take a few seconds).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		m := scrapeMetrics(t, httpAddr)
		if m["lakehouse_compaction_runs_total"] > 0 && m["lakehouse_expiry_snapshots_total"] > 0 && statusTablesMaintained(t, httpAddr) {
			break
		}
	}
	stopReader()
	<-readerDone
	metrics := scrapeMetrics(t, httpAddr)
	checkStatusTables(t, httpAddr)
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	t.Logf("reader checked %d table snapshots (%d reads retried); restarted server: %v compactions, %v snapshots expired, %v flushes, %v stages",
		reads.Load(), readErrs.Load(), metrics["lakehouse_compaction_runs_total"], metrics["lakehouse_expiry_snapshots_total"],
		metrics[`lakehouse_flushes_total{result="success"}`], metrics[`lakehouse_stages_total{result="success"}`])
	if reads.Load() == 0 {
		t.Error("the reader never read a table")
	}
	for _, name := range []string{"lakehouse_compaction_runs_total", "lakehouse_expiry_snapshots_total"} {
		if metrics[name] == 0 {
			t.Errorf("%s is 0 in the restarted server: maintenance did not run", name)
		}
	}
	if f := metrics[`lakehouse_flushes_total{result="failure"}`]; f != 0 {
		t.Errorf("%v flushes failed while maintenance ran", f)
	}
	// The gauge of the merges' off-heap memory is exported (its value is
	// whatever a pass was merging at the scrape).
	if v, ok := metrics["lakehouse_compaction_offheap_bytes"]; !ok {
		t.Error("lakehouse_compaction_offheap_bytes is not exported")
	} else {
		t.Logf("lakehouse_compaction_offheap_bytes %v at the last scrape", v)
	}

	checkExactlyOnce(t, srcs, readSink(t, "iceberg", dataDir), maxBatches*batchSize)

	// The dead compaction left files no snapshot references; a one-shot
	// maintenance pass with a short orphan age removes them.
	time.Sleep(1100 * time.Millisecond)
	out, err := exec.Command(lakehouseBin(t), "maintain", "--data-dir", dataDir, "--orphan-age", "1s", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("lakehouse maintain: %v\n%s", err, out)
	}
	var health []struct {
		Name           string
		OrphansRemoved int
	}
	if err := json.Unmarshal(out, &health); err != nil {
		t.Fatalf("lakehouse maintain --json: %v\n%s", err, out)
	}
	removed := 0
	for _, h := range health {
		removed += h.OrphansRemoved
	}
	if removed == 0 {
		t.Errorf("lakehouse maintain removed no orphans after a compaction died before its commit:\n%s", out)
	}
	checkNoUnreferencedDataFiles(t, dataDir)
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}

// exitCompactionFaultEnv mirrors the fault injection of cmd/lakehouse.
const exitCompactionFaultEnv = "LAKEHOUSE_TEST_EXIT_BEFORE_COMPACTION_COMMIT"

// snapshotReader reads every table's current snapshot in a loop and checks
// that, per source, the entries form the unbroken sequence W1 puts in that
// table (entry e goes to table (e-1) mod 8): no duplicate, no gap. cfg
// names the catalog and warehouse to read.
func snapshotReader(t *testing.T, ctx context.Context, cfg iceberg.Config, reads, retried *atomic.Int64) {
	var sk *iceberg.Sink
	cfg.Logger = quietLogger()
	for ctx.Err() == nil {
		if sk == nil {
			var err error
			if sk, err = iceberg.Open(ctx, cfg); err != nil {
				retried.Add(1)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			defer sk.Close()
		}
		tables, err := sk.Tables(ctx)
		if err != nil {
			retried.Add(1)
			continue
		}
		for _, tb := range tables {
			recs, err := sk.Scan(ctx, tb.Name, 0)
			if err != nil {
				// Expiry may delete the files of a snapshot while it is
				// read (retention is 2 s here); read again.
				retried.Add(1)
				continue
			}
			reads.Add(1)
			bySource := make(map[string][]uint64)
			for _, r := range recs {
				bySource[r.SourceID] = append(bySource[r.SourceID], r.EntrySeq)
			}
			for src, seqs := range bySource {
				slices.Sort(seqs)
				for i, q := range seqs {
					want := seqs[0] + uint64(i)*8
					if q != want || (q-1)%8 != (seqs[0]-1)%8 || seqs[0] > 8 {
						t.Errorf("table %s snapshot: source %s entries %v... break at index %d (%d, want %d): a row is missing or doubled",
							tb.Name, src, seqs[:min(len(seqs), 5)], i, q, want)
						break
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoUnreferencedDataFiles checks that every Parquet file under each
// table's data/ directory is referenced by one of the table's snapshots.
func checkNoUnreferencedDataFiles(t *testing.T, dataDir string) {
	t.Helper()
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dataDir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	tables, err := sk.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range tables {
		tbl, err := sk.LoadTable(ctx, info.Name)
		if err != nil {
			t.Fatal(err)
		}
		fsys, err := tbl.FS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		referenced := make(map[string]bool)
		for _, snap := range tbl.Metadata().Snapshots() {
			mans, err := snap.Manifests(fsys)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range mans {
				entries, err := m.FetchEntries(fsys, false)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					if e.Status() != iceberggo.EntryStatusDELETED {
						referenced[strings.TrimPrefix(e.DataFile().FilePath(), "file://")] = true
					}
				}
			}
		}
		root := filepath.Join(strings.TrimPrefix(tbl.Location(), "file://"), "data")
		onDisk := 0
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".parquet") {
				return err
			}
			onDisk++
			if !referenced[path] {
				t.Errorf("table %s: %s is on disk but no snapshot references it", info.Name, path)
			}
			return nil
		})
		if onDisk == 0 {
			t.Errorf("table %s: no data files on disk", info.Name)
		}
	}
}

// checkStatusTables reads GET /status, as monitoring would, and checks that
// every table reports its health and a last maintenance pass.
// statusTable is a table's health as GET /status reports it.
type statusTable struct {
	Name                string `json:"name"`
	Snapshots           int    `json:"snapshots"`
	DataFiles           int    `json:"dataFiles"`
	MetadataBytes       int64  `json:"metadataBytes"`
	LastMaintenanceTime int64  `json:"lastMaintenanceTime"`
}

func statusTables(t *testing.T, httpAddr string) []statusTable {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Tables []statusTable `json:"tables"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("GET /status: %v", err)
	}
	return st.Tables
}

// statusTablesMaintained reports whether GET /status lists W1's 8 tables,
// each maintained once at least.
func statusTablesMaintained(t *testing.T, httpAddr string) bool {
	tables := statusTables(t, httpAddr)
	return len(tables) == 8 && !slices.ContainsFunc(tables, func(tb statusTable) bool { return tb.LastMaintenanceTime == 0 })
}

func checkStatusTables(t *testing.T, httpAddr string) {
	t.Helper()
	st := struct{ Tables []statusTable }{statusTables(t, httpAddr)}
	if len(st.Tables) != 8 {
		t.Fatalf("GET /status lists %d tables, want the 8 of W1: %+v", len(st.Tables), st.Tables)
	}
	for _, tb := range st.Tables {
		if tb.Snapshots == 0 || tb.DataFiles == 0 || tb.MetadataBytes == 0 || tb.LastMaintenanceTime == 0 {
			t.Errorf("GET /status table %+v: want its health and last maintenance", tb)
		}
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
