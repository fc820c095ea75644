package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/bench"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// legacyWindow bounds each legacy child's unanswered batches in the demo (the
// original allowed 100; a few keep the demo's memory small).
const legacyWindow = 4

// runDemo implements `lakehouse demo`: a server in this process on a fresh
// data directory, W1 from native sources (the Go client) and legacy
// WebSocket children (through the bridge) for a while, then a flush, the
// tables with a few rows, and how to open them in other engines.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", 20*time.Second, "how long to stream")
	native := fs.Int("native", 3, "native sources (the Go client over gRPC)")
	legacy := fs.Int("legacy", 2, "legacy children (the original WebSocket protocol, through the bridge)")
	dataDir := fs.String("data-dir", "", "data directory (default: a new temporary directory, kept afterwards)")
	httpAddr := fs.String("http-addr", "127.0.0.1:0", "HTTP address of the status page and the bridge (port 0: any free port)")
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:0", "gRPC address (port 0: any free port)")
	interval := fs.Duration("flush-interval", 5*time.Second, "commit interval")
	rows := fs.Int("rows", 3, "rows to print per table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *native < 0 || *legacy < 0 || *native+*legacy == 0 {
		return errors.New("--native and --legacy: at least one source")
	}
	dir := *dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "lakehouse-demo-")
		if err != nil {
			return err
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()

	// The server runs until stopServer, not until Ctrl-C: an interrupted
	// demo still drains and flushes what was acknowledged.
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	type addrs struct{ grpc, http string }
	ready := make(chan addrs, 1)
	served := make(chan error, 1)
	go func() {
		served <- serve(srvCtx, []string{"--data-dir", dir, "--grpc-addr", *grpcAddr, "--http-addr", *httpAddr,
			"--flush-interval", interval.String(), "--maintenance-interval", "10s", "--log-level", "info"},
			logFile, logFile, func(g, h string) { ready <- addrs{g, h} })
	}()
	var a addrs
	select {
	case a = <-ready:
	case err := <-served:
		return fmt.Errorf("starting the server: %w (log: %s)", err, logFile.Name())
	}
	stop := func() error {
		stopServer()
		return <-served
	}

	fmt.Fprintf(stdout, "lakehouse demo\n")
	fmt.Fprintf(stdout, "  status page:  http://%s/   (open it in a browser; it updates live)\n", a.http)
	fmt.Fprintf(stdout, "  gRPC:         %s   (try: lakehouse status --addr %s)\n", a.grpc, a.grpc)
	fmt.Fprintf(stdout, "  data dir:     %s   (server log: %s)\n", dir, logFile.Name())
	fmt.Fprintf(stdout, "streaming workload W1 for %s from %d native sources (Go client) and %d legacy WebSocket children (bridge); Ctrl-C stops early\n\n",
		*duration, *native, *legacy)

	loadCtx, stopLoad := context.WithTimeout(ctx, *duration)
	defer stopLoad()
	var wg sync.WaitGroup
	var benchSum *bench.Summary
	var benchErr error
	if *native > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded by Duration; ctx (Ctrl-C) stops it early.
			benchSum, benchErr = bench.Run(ctx, bench.Config{Addr: a.grpc, Sources: *native, Duration: *duration, SourcePrefix: "native"})
		}()
	}
	children := make([]*legacychild.Child, *legacy)
	for i := range children {
		c := &legacychild.Child{
			Source: fmt.Sprintf("legacy-%d", i), Shard: fmt.Sprintf("shard-%d", i), Heartbeat: 5 * time.Second,
			Entries: func(first uint64, n int) []codec.Entry { return workload.Entries(int64(first-1), int64(n)) },
		}
		if err := c.Start(ctx, "ws://"+a.http+"/"); err != nil {
			stopLoad()
			wg.Wait()
			return errors.Join(fmt.Errorf("legacy child: %w", err), stop())
		}
		defer c.Close()
		children[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				if c.Pending() >= legacyWindow {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				c.SendEntries(1000)
			}
		}()
	}

	cc, admin, err := dialAdmin(a.grpc)
	if err != nil {
		return errors.Join(err, stop())
	}
	defer cc.Close()
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()
	start := time.Now()
	tick := time.NewTicker(time.Second)
	var lastEntries uint64
	lastT := start
progress:
	for {
		select {
		case <-loadDone:
			break progress
		case now := <-tick.C:
			st, err := fetchStatus(ctx, admin)
			if err != nil {
				continue
			}
			var entries uint64
			for _, s := range st.GetSources() {
				entries += s.GetEntriesReceived()
			}
			rate := float64(entries-lastEntries) / now.Sub(lastT).Seconds()
			lastEntries, lastT = entries, now
			fmt.Fprintf(stdout, "  %4.0fs  %10d entries  %8.0f entries/s  %d sources connected  buffer %3.0f%%  log %6.1f MiB  last commit %s\n",
				now.Sub(start).Seconds(), entries, rate, st.GetConnectedSources(), 100*st.GetBuffer().GetUtilization(),
				float64(st.GetWal().GetSizeBytes())/(1<<20), lastCommit(st, now))
		}
	}
	tick.Stop()
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintln(stdout, "\ninterrupted: stopping the sources and flushing what was acknowledged")
	}
	// Wait for the legacy children's last answers (their batches are
	// durable once acked).
	for _, c := range children {
		if _, err := c.WaitIdle(30 * time.Second); err != nil {
			fmt.Fprintf(stdout, "  %v\n", err)
		}
	}
	if benchErr != nil && !errors.Is(benchErr, context.Canceled) {
		fmt.Fprintf(stdout, "  native sources: %v\n", benchErr)
	}
	if benchSum != nil {
		fmt.Fprintf(stdout, "\nnative sources: %s\n", benchSum)
	}
	for _, c := range children {
		st := c.Stats()
		fmt.Fprintf(stdout, "legacy child %s: %d batches sent, %d acked, %d resent, %d failed\n", c.Source, st.Sent, st.Acked, st.Resent, st.Failed)
	}

	fctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fr, err := admin.Flush(fctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
	if err != nil {
		return errors.Join(fmt.Errorf("flush: %w", err), stop())
	}
	res := fr.GetResult()
	fmt.Fprintf(stdout, "\nflushed: success=%v, %d entries in %d ms\n", res.GetSuccess(), res.GetEntriesFlushed(), res.GetDurationMs())
	st, err := fetchStatus(fctx, admin)
	if err != nil {
		return errors.Join(err, stop())
	}
	var accepted uint64
	for _, s := range st.GetSources() {
		accepted += s.GetEntriesReceived()
	}
	for _, c := range children {
		c.Close()
	}
	if err := stop(); err != nil {
		return fmt.Errorf("server: %w", err)
	}

	// Read the tables back through the catalog, as any engine would.
	sk, err := iceberg.Open(fctx, iceberg.Config{DataDir: dir, Logger: discardLogger()})
	if err != nil {
		return err
	}
	defer sk.Close()
	infos, err := sk.Tables(fctx)
	if err != nil {
		return err
	}
	var total int64
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(stdout, "\ntables (Iceberg namespace cdc):")
	fmt.Fprintln(tw, "  TABLE\tROWS\tSNAPSHOTS\tDATA FILES")
	for _, t := range infos {
		total += t.Rows
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", t.Name, t.Rows, t.Snapshots, t.Files)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "  total: %d rows; the sources' accepted entries: %d\n", total, accepted)
	var metaLoc string
	for _, t := range infos {
		recs, err := sk.Scan(fctx, t.Name, *rows)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\n%s, first %d rows:\n", t.Name, len(recs))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SOURCE\tBATCH\tENTRY\tOP\tROW_ID\tAFTER")
		for _, r := range recs {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\t%s\t%s\n", r.SourceID, r.BatchSeq, r.EntrySeq, r.Op, r.RowID, clip(r.After))
		}
		tw.Flush()
	}
	first := "users"
	if len(infos) > 0 && !containsTable(infos, first) {
		first = infos[0].Name
	}
	if tbl, err := sk.LoadTable(fctx, first); err == nil {
		metaLoc = tbl.MetadataLocation()
	}
	// The mirror (on by default): the table as it is now, typed columns.
	fmt.Fprintf(stdout, "\n%s as it is now (its mirror table %s: one row per key, typed columns), first %d rows:\n",
		first, strings.Join(sk.MirrorIdentifier(first), "."), *rows)
	if err := scanMirror(fctx, sk, first, *rows, false, stdout); err != nil {
		fmt.Fprintf(stdout, "  %v\n", err)
	}
	fmt.Fprintf(stdout, "  (all of it: lakehouse scan --data-dir %s --table %s --mirror --limit 0)\n", dir, first)
	fmt.Fprint(stdout, readSnippets(dir, first, metaLoc))
	if interrupted {
		fmt.Fprintln(stdout, "\n(stopped early by Ctrl-C)")
	}
	return nil
}

func containsTable(infos []iceberg.TableInfo, name string) bool {
	for _, t := range infos {
		if t.Name == name {
			return true
		}
	}
	return false
}

func fetchStatus(ctx context.Context, c lakehousev1.CDCServiceClient) (*lakehousev1.ServerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := c.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
	return r.GetStatus(), err
}

func lastCommit(st *lakehousev1.ServerStatus, now time.Time) string {
	ms := st.GetLastFlushTimeMs()
	if ms == 0 {
		return "none yet"
	}
	return fmt.Sprintf("%.0fs ago", now.Sub(time.UnixMilli(ms)).Seconds())
}

// readSnippets tells how to open the embedded catalog's tables in DuckDB,
// pyiceberg and Spark. metaLoc is the current metadata file of table (for
// DuckDB, which reads a table from its metadata file).
func readSnippets(dataDir, table, metaLoc string) string {
	warehouse := (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(dataDir, "warehouse"))}).String()
	catalogDB := filepath.Join(dataDir, "catalog.db")
	metaPath := strings.TrimPrefix(metaLoc, "file://")
	if metaPath == "" {
		metaPath = "<" + filepath.Join(dataDir, "warehouse", "cdc.db", table, "metadata", "NNNNN-....metadata.json") + ">"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nwarehouse: %s\ncatalog:   SQLite %s (Iceberg SQL/JDBC catalog named %q, namespace %q)\n",
		warehouse, catalogDB, iceberg.DefaultCatalogName, iceberg.DefaultNamespace)
	fmt.Fprintf(&b, "\nDuckDB (iceberg extension; reads the table's current metadata file):\n")
	fmt.Fprintf(&b, "  duckdb -c \"INSTALL iceberg; LOAD iceberg; SELECT op, count(*) FROM iceberg_scan('%s') GROUP BY op;\"\n", metaPath)
	fmt.Fprintf(&b, "\npyiceberg (pip install 'pyiceberg[sql-sqlite,pyarrow]'):\n")
	fmt.Fprintf(&b, "  from pyiceberg.catalog.sql import SqlCatalog\n")
	fmt.Fprintf(&b, "  cat = SqlCatalog(%q, uri=\"sqlite:///%s\", warehouse=%q)\n", iceberg.DefaultCatalogName, catalogDB, warehouse)
	fmt.Fprintf(&b, "  print(cat.load_table(\"%s.%s\").scan(limit=5).to_arrow())\n", iceberg.DefaultNamespace, table)
	fmt.Fprintf(&b, "\nSpark (Iceberg JDBC catalog on the same SQLite file):\n")
	fmt.Fprintf(&b, "  spark-sql --packages org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:1.9.2,org.xerial:sqlite-jdbc:3.46.1.3 \\\n")
	fmt.Fprintf(&b, "    --conf spark.sql.extensions=org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions \\\n")
	fmt.Fprintf(&b, "    --conf spark.sql.catalog.%s=org.apache.iceberg.spark.SparkCatalog \\\n", iceberg.DefaultCatalogName)
	fmt.Fprintf(&b, "    --conf spark.sql.catalog.%s.type=jdbc \\\n", iceberg.DefaultCatalogName)
	fmt.Fprintf(&b, "    --conf spark.sql.catalog.%s.uri=jdbc:sqlite:%s \\\n", iceberg.DefaultCatalogName, catalogDB)
	fmt.Fprintf(&b, "    --conf spark.sql.catalog.%s.jdbc.schema-version=V1 \\\n", iceberg.DefaultCatalogName)
	fmt.Fprintf(&b, "    --conf spark.sql.catalog.%s.warehouse=%s \\\n", iceberg.DefaultCatalogName, warehouse)
	fmt.Fprintf(&b, "    -e \"SELECT op, count(*) FROM %s.%s.%s GROUP BY op\"\n", iceberg.DefaultCatalogName, iceberg.DefaultNamespace, table)
	fmt.Fprintf(&b, "\nThe data directory is kept; remove it with: rm -rf %s\n", dataDir)
	return b.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
