package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// sinkFlags are the flags that choose and configure the sink, shared by
// serve, scan and tables.
type sinkFlags struct {
	kind       string
	catalog    string
	catalogURI string
	credential string
	token      string
	warehouse  string
	namespace  string
	fileSize   int64
	props      string
	// commitParallelism: tables one commit works on at once (serve and
	// replay only).
	commitParallelism int
	maint             *maintFlags  // serve and maintain only
	mirror            *mirrorFlags // serve and maintain only
	// fenceIdleTx is the lease TTL in multi-instance mode (coordflags.go).
	fenceIdleTx time.Duration
	// exclusiveMaint: multi-instance mode maintains each table on one
	// instance at a time.
	exclusiveMaint bool
	// committer, instanceID, committerInterval: the elected committer
	// (coordflags.go).
	committer         bool
	instanceID        string
	committerInterval time.Duration
	// memoryLimit: the process's soft memory limit, which the sink's
	// off-heap merges share with the Go heap (serve only; memlimit.go).
	memoryLimit int64
	// memoryLimitFloor: where the sink holds that limit while collections
	// are cheap; 0: at memoryLimit (memlimit.go).
	memoryLimitFloor int64
}

// register adds the flags of serve: where flushes go and how they are written,
// and the catalog flags.
func (f *sinkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.kind, "sink", "iceberg", "where flushes go: iceberg, or jsonl (JSON-lines files under <data-dir>/jsonl, for debugging)")
	fs.Int64Var(&f.fileSize, "target-file-size", 128<<20, "target Parquet data file size in bytes")
	fs.IntVar(&f.commitParallelism, commitParallelismKey, commitParallelismDefault, commitParallelismUsage)
	f.registerCatalog(fs)
}

const (
	commitParallelismKey     = "commit-parallelism"
	commitParallelismDefault = iceberg.DefaultCommitParallelism
	commitParallelismUsage   = "how many tables a commit works on at once, the smallest first (each table's changelog commit, then its mirror's): " +
		"a commit takes about as long as its slowest table instead of the sum of all, but takes CPU from ingest and the acks; " +
		"1: one table after the other; 0: half the CPUs (GOMAXPROCS), at least 1, at most 4"
)

// registerCatalog adds the flags that locate the catalog and the warehouse,
// the only ones readers (scan, tables) need.
func (f *sinkFlags) registerCatalog(fs *flag.FlagSet) {
	fs.StringVar(&f.catalog, "catalog", "sql", "Iceberg catalog: sql (SQLite in the data dir by default, or PostgreSQL via --catalog-uri), rest or glue")
	fs.StringVar(&f.catalogURI, "catalog-uri", "", "catalog URI: a postgres:// DSN or SQLite path for sql, the endpoint for rest")
	fs.StringVar(&f.credential, "catalog-credential", "", "REST catalog credential (client_id:client_secret)")
	fs.StringVar(&f.token, "catalog-token", "", "REST catalog bearer token")
	fs.StringVar(&f.warehouse, "warehouse", "", "warehouse URL: file://, mem://, s3://, gs://, azblob:// (default file://<data-dir>/warehouse)")
	fs.StringVar(&f.namespace, "namespace", "cdc", "Iceberg namespace of the CDC tables")
	fs.StringVar(&f.props, "catalog-props", "", "extra catalog and storage properties, comma-separated key=value (e.g. s3.endpoint=http://127.0.0.1:9000,s3.region=us-east-1)")
}

func (f *sinkFlags) icebergConfig(dataDir string, log *slog.Logger) (iceberg.Config, error) {
	if err := f.checkCatalog(); err != nil {
		return iceberg.Config{}, err
	}
	props := map[string]string{}
	if f.props != "" {
		for _, kv := range strings.Split(f.props, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return iceberg.Config{}, fmt.Errorf("--catalog-props: %q is not key=value", kv)
			}
			props[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	// 0: automatic (iceberg.AutoCommitParallelism), also for commands
	// without the flag (readers), which commit nothing.
	if f.commitParallelism < 0 || f.commitParallelism > iceberg.MaxCommitParallelism {
		return iceberg.Config{}, fmt.Errorf("--%s %d: want 0 (automatic) or 1 to %d", commitParallelismKey, f.commitParallelism, iceberg.MaxCommitParallelism)
	}
	var mc iceberg.MaintenanceConfig
	if f.maint != nil {
		mc = f.maint.cfg
	}
	cfg := iceberg.Config{
		Maintenance:          mc,
		DataDir:              dataDir,
		CatalogType:          f.catalog,
		CatalogURI:           f.catalogURI,
		Credential:           f.credential,
		Token:                f.token,
		Warehouse:            f.warehouse,
		Namespace:            f.namespace,
		TargetFileSizeBytes:  f.fileSize,
		CommitParallelism:    f.commitParallelism,
		Properties:           props,
		Logger:               log,
		FenceIdleTxTimeout:   f.fenceIdleTx,
		ExclusiveMaintenance: f.exclusiveMaint,
		ElectedCommitter:     f.committer,
		InstanceID:           f.instanceID,
		CommitterInterval:    f.committerInterval,
		MemoryLimit:          f.memoryLimit,
		MemoryLimitFloor:     f.memoryLimitFloor,
	}
	if f.mirror != nil {
		if err := f.mirror.apply(&cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

func (f *sinkFlags) open(ctx context.Context, dataDir string, log *slog.Logger) (sink.Sink, error) {
	switch f.kind {
	case "iceberg":
		cfg, err := f.icebergConfig(dataDir, log)
		if err != nil {
			return nil, err
		}
		cfg.BeforeTableCommit, err = exitBefore(log, exitFaultEnv, "Iceberg table commit")
		if err != nil {
			return nil, err
		}
		cfg.BeforeRewriteCommit, err = exitBefore(log, exitCompactionFaultEnv, "compaction commit")
		if err != nil {
			return nil, err
		}
		return opened(iceberg.Open(ctx, cfg))
	case "jsonl":
		return opened(jsonl.Open(filepath.Join(dataDir, "jsonl")))
	}
	return nil, fmt.Errorf("--sink: unknown sink %q (iceberg or jsonl)", f.kind)
}

// opened returns a sink that failed to open as a nil interface, not as a
// typed nil pointer that callers would take for an open sink (and close).
func opened[S sink.Sink](s S, err error) (sink.Sink, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// exitFaultEnv names a fault injection for crash tests: when it is set to N,
// the process exits abruptly (status 3, no flush, no cleanup) just before the
// N-th Iceberg table commit since start, as if killed between the table
// commits of one flush.
const exitFaultEnv = "LAKEHOUSE_TEST_EXIT_BEFORE_TABLE_COMMIT"

// exitCompactionFaultEnv is the same for the N-th compaction commit: the
// process exits after the compaction wrote its files, before it commits them.
const exitCompactionFaultEnv = "LAKEHOUSE_TEST_EXIT_BEFORE_COMPACTION_COMMIT"

// exitBefore returns the hook of the fault injection named by env, or nil
// when env is not set.
func exitBefore(log *slog.Logger, env, what string) (func(string) error, error) {
	v := os.Getenv(env)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("%s=%q: want a positive number", env, v)
	}
	log.Warn("fault injection on: exiting before a "+what, "env", env, "n", n)
	var count atomic.Int64
	return func(table string) error {
		if count.Add(1) == int64(n) {
			log.Warn("fault injection: exiting now", "before", what, "table", table)
			os.Exit(3)
		}
		return nil
	}, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// serveOptions are the values of serve's flags.
type serveOptions struct {
	cfg      server.Config
	sf       sinkFlags
	grpcAddr *string
	httpAddr *string
	level    *string
	drain    *time.Duration
	pprofOn  *bool
	noMaint  *bool
	memLimit *int64
	lim      limitFlags
	sec      securityFlags
	coord    coordFlags
}

// serveFlagSet defines every flag of serve (the configuration reference in
// docs/configuration.md and lakehouse.example.yaml are generated from it).
func serveFlagSet(out io.Writer) (*flag.FlagSet, *serveOptions) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	o := &serveOptions{}
	cfg, sf := &o.cfg, &o.sf
	fs.String(configFlag, "", "YAML configuration file whose keys are these flags' names; flags and LAKEHOUSE_* variables override it")
	o.grpcAddr = fs.String("grpc-addr", defaultGRPCAddr, "gRPC listen address")
	o.httpAddr = fs.String("http-addr", defaultHTTPAddr, "HTTP listen address: status page at /, WebSocket bridge for legacy children, /health, /status, /flush, /metrics (empty: off)")
	o.level = fs.String("log-level", "info", "log level: debug, info, warn, error")
	o.drain = fs.Duration("shutdown-timeout", 60*time.Second, "how long SIGTERM/SIGINT may take to flush and close")
	o.pprofOn = fs.Bool("pprof", false, "serve Go profiling endpoints under /debug/pprof/ on --http-addr")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "data directory: write-ahead log, sequencing state, embedded catalog and warehouse")
	fs.IntVar(&cfg.FlushEntries, "flush-entries", 10000, "write the buffer as data files (staged for the next commit) when it holds this many entries")
	fs.Int64Var(&cfg.FlushBytes, "flush-bytes", 32<<20, "write the buffer as data files when it holds this many bytes; also the most one flush takes (and reads back from the write-ahead log)")
	fs.DurationVar(&cfg.FlushAge, "flush-age", 60*time.Second, "write the buffer as data files when its oldest batch is this old")
	fs.DurationVar(&cfg.FlushInterval, "flush-interval", 30*time.Second, "commit interval: what is buffered and staged is committed this often, one snapshot per table (freshness; 1s works)")
	fs.DurationVar(&cfg.CommitTimeout, "commit-timeout", server.DefaultCommitTimeout, "bound on each staging, commit and start-up read of the catalog and store; a stalled store fails the flush (acks say fallback) and the recovery loop retries")
	fs.DurationVar(&cfg.RecoveryMaxDelay, "recovery-max-delay", server.DefaultRecoveryMaxDelay,
		"longest wait between retries of a failing commit (storage or catalog outage; the first retry is after 1s, doubling): after an outage the backlog is committed at most this long after the store returns")
	o.noMaint = fs.Bool("no-maintenance", false, "do not run table maintenance (snapshot expiry, compaction, orphan cleanup) in the background")
	sf.maint = &maintFlags{}
	sf.maint.register(fs)
	sf.mirror = &mirrorFlags{}
	sf.mirror.register(fs, true)
	fs.Int64Var(&cfg.MaxBufferBytes, "max-buffer-bytes", 128<<20, "memory buffer cap; beyond it batches are held only in the write-ahead log and read back at flush")
	fs.Int64Var(&cfg.WALMaxBytes, "wal-max-bytes", 1<<30, "write-ahead log cap on disk; beyond it batches are nacked buffer_full")
	o.memLimit = fs.Int64(memoryLimitKey, memoryLimitDefault, memoryLimitUsage)
	fs.Float64Var(&cfg.WALCommitThreshold, "wal-commit-threshold", server.DefaultWALCommitThreshold,
		"commit early, ahead of --flush-interval, when the write-ahead log holds this share of --wal-max-bytes (only a commit releases the log; "+
			"a load above the cap per interval would otherwise be refused until the next commit); 1: never early")
	o.lim.register(fs)
	sf.register(fs)
	o.sec.register(fs)
	o.coord.register(fs)
	return fs, o
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, args, stdout, stderr, nil)
}

// serve runs `lakehouse serve` with args; ready, when set, is called with the
// gRPC and HTTP addresses (HTTP "" when off) once both listen.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(grpcAddr, httpAddr string)) error {
	fs, o := serveFlagSet(stdout)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, sf := o.cfg, o.sf
	log, err := newLogger(stderr, *o.level)
	if err != nil {
		return err
	}
	if err := sf.checkCatalog(); err != nil {
		return err
	}
	if err := o.lim.validate(); err != nil {
		return err
	}
	if err := o.coord.validate(&sf); err != nil {
		return err
	}
	if o.coord.committerTimeoutShort(cfg.FlushInterval, cfg.CommitTimeout) {
		log.Warn("--commit-timeout is below twice --flush-interval: with --elected-committer an early commit (the buffer or the write-ahead log filled) waits up to an interval and a quarter for its table's committer and can time out, acks then say fallback; manual commits do not wait",
			"commit_timeout", cfg.CommitTimeout, "flush_interval", cfg.FlushInterval, "want_at_least", 2*cfg.FlushInterval)
	}
	if t := cfg.WALCommitThreshold; t <= 0 || t > 1 {
		return fmt.Errorf("--wal-commit-threshold %v: want a share of --wal-max-bytes above 0 and at most 1", t)
	}
	if cfg.RecoveryMaxDelay < 100*time.Millisecond {
		return fmt.Errorf("--recovery-max-delay %v: want at least 100ms", cfg.RecoveryMaxDelay)
	}
	if *o.memLimit < -1 {
		return fmt.Errorf("--%s %d: want bytes, 0 (derived from --max-buffer-bytes) or -1 (none)", memoryLimitKey, *o.memLimit)
	}
	o.lim.applyServer(&cfg, o.sec.tokens != "")
	cfg.Logger = log
	restoreLimit, limit, floor := applyMemoryLimit(log, *o.memLimit, cfg.MaxBufferBytes)
	defer restoreLimit()
	sf.memoryLimit, sf.memoryLimitFloor = limit, floor
	if !*o.pprofOn {
		stopHeapProfiling()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = reg
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return err
	}
	leases, err := o.coord.open(ctx, &sf, cfg.DataDir, *o.grpcAddr)
	if err != nil {
		return err
	}
	if leases != nil {
		defer leases.Close()
		cfg.Coordinator = leases
		o.coord.applySink(&sf, leases, cfg.FlushInterval)
		cfg.AlignCommits = sf.committer
		sf.exclusiveMaint = true
		if need := cfg.FlushInterval + commitslot.Gather(cfg.FlushInterval); sf.committer && *o.drain < need {
			log.Warn("a drain's commit waits for the table's next commit slot, which can be later than the shutdown timeout: what it does not commit stays in the write-ahead log until the next start",
				"shutdown_timeout", *o.drain, "flush_interval", cfg.FlushInterval, "needs", need)
		}
	}
	sec, err := o.sec.open(log, reg, *o.grpcAddr, *o.httpAddr)
	if err != nil {
		return err
	}
	stopWatch := sec.watch(ctx, log)
	defer stopWatch()
	var appTLS func() *tls.Config
	if sec.tls != nil {
		appTLS = sec.serverTLS
	}
	a, err := startApp(ctx, appConfig{
		Server:      cfg,
		OpenSink:    func(ctx context.Context) (sink.Sink, error) { return sf.open(ctx, cfg.DataDir, log) },
		GRPCAddr:    *o.grpcAddr,
		GRPCOptions: o.lim.grpcOptions(),
		Limits:      &o.lim,
		HTTPAddr:    *o.httpAddr,
		Metrics:     reg,
		PProf:       *o.pprofOn,
		Logger:      log,
		Maintain:    !*o.noMaint,
		StatusPage:  true,
		TLS:         appTLS,
		Auth:        sec.tokens,
	})
	if err != nil {
		return err
	}
	if h := a.httpAddr(); h != "" {
		log.Info("http listening", "addr", h, "endpoints", "status page /, WebSocket bridge, /health, /status, /flush, /metrics")
	}
	if ready != nil {
		ready(a.grpcAddr(), a.httpAddr())
	}
	// mirror says whether the current-state tables are written (on by
	// default; --mirror=false turns them off), so a log shows which.
	log.Info("lakehouse serving", "grpc", a.grpcAddr(), "data_dir", cfg.DataDir, "sink", sf.kind,
		"mirror", sf.kind == "iceberg" && sf.mirror.on, "tls", sec.tls != nil, "tokens", sec.tokens != nil)

	runErr := a.wait(ctx)
	if runErr != nil {
		log.Error("stopping", "error", runErr)
	} else {
		log.Info("shutting down: flushing and closing streams")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *o.drain)
	defer cancel()
	if err := errors.Join(runErr, a.stop(sctx)); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
