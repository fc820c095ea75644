package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// defaultFlushTimeout is how long flush --timeout and bench
// --flush-timeout wait for a server's commit by default.
const defaultFlushTimeout = 5 * time.Minute

// benchComparison is the --compare result: the client run, the raw stream
// baseline and their throughput ratio.
type benchComparison struct {
	Client *bench.Summary `json:"client"`
	Raw    *bench.Summary `json:"raw"`
	// Ratio is client entries/s over raw entries/s.
	Ratio float64 `json:"ratio"`
}

// runBench implements `lakehouse bench`: it loads a server with workload W1
// through the Go client (or, with --raw, plain gRPC streams; with --compare,
// both; with --frames or --rate, pooled pre-encoded frames) and prints
// throughput, latency and CPU per million entries. With no --addr it calls
// startServer to run a server in-process (nil: --addr is required).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer,
	startServer func(ctx context.Context, mirror bool) (addr string, stop func() error, err error)) (err error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "", "server gRPC address (empty: start a server in-process)")
	sources := fs.Int("sources", 1, "concurrent sources, one client (or raw stream) each")
	duration := fs.Duration("duration", 10*time.Second, "how long to send (0: until --entries are sent)")
	entries := fs.Int64("entries", 0, "total entries to send, split over the sources (0: until --duration)")
	batch := fs.Int("batch", 1000, "entries per batch")
	pending := fs.Int("pending", 8, "pending-batch limit of each client")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	raw := fs.Bool("raw", false, "measure the raw gRPC stream baseline instead of the client")
	compare := fs.Bool("compare", false, "run the client, then the raw baseline, and print both with their ratio")
	progress := fs.Duration("progress", time.Second, "progress line interval on stderr (0: none)")
	tablePrefix := fs.String("table-prefix", "bench_", "prefix of the W1 table names, keeping benchmark rows out of real tables (empty: none)")
	frames := fs.Bool("frames", false, "send pre-encoded W1 frames (a pool per source, sequence numbers and checksum patched per batch) "+
		"over plain streams, at most --pending unanswered batches per source: a load generator that costs next to nothing")
	rate := fs.Float64("rate", 0, "open loop: offer this many entries/s in all (pre-encoded frames, as --frames), latency measured "+
		"from each batch's scheduled send time (0: closed loop)")
	metricsAddr := fs.String("metrics-addr", "", "the server's HTTP address (its --http-addr), to read process_cpu_seconds_total "+
		"from /metrics before and after the run and report the server's CPU-seconds per million entries (in-process server: rusage), "+
		"and process_resident_memory_bytes every 2 s, for its median and peak RSS")
	var cf connFlags
	cf.register(fs, "tls")
	grace := fs.Duration("grace", bench.DefaultGrace, "wait at most this long for the outstanding acks after --duration, and stop sending "+
		"once no ack has come for this long; what stays unacknowledged is reported, and the exit status is then non-zero")
	flushTimeout := fs.Duration("flush-timeout", defaultFlushTimeout, "wait at most this long for the server's commit "+
		"before the run (of what it buffered earlier) and after it (of what the run left buffered, part of the CPU figure): "+
		"a server slower to commit than to ack leaves a backlog in its write-ahead log, which can take minutes after a long run")
	workloadName := fs.String("workload", bench.WorkloadW1, "what to send: "+bench.WorkloadW1+" (DESIGN.md) or "+bench.WorkloadKeyed+
		" (inserts, updates and deletes over a key space shared by the sources; client and --frames modes)")
	keys := fs.Int("keys", workload.DefaultKeyedKeys, "key space of --workload keyed")
	mirror := fs.Bool(KeyMirror, DefaultMirror, "in-process server (no --addr): keep mirror tables, as serve does by default; "+
		"--mirror=false measures the changelog alone")
	var lf legacyFlags
	lf.register(fs)
	var fresh freshnessFlags
	fresh.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if lf.legacy {
		return runLegacyBench(ctx, lf, *batch, *pending, *tablePrefix, *metricsAddr, *grace, *asJSON, stdout)
	}
	if *grace <= 0 {
		return fmt.Errorf("--grace %v must be positive", *grace)
	}
	if *flushTimeout <= 0 {
		return fmt.Errorf("--flush-timeout %v must be positive", *flushTimeout)
	}
	keysSet := false
	fs.Visit(func(f *flag.Flag) { keysSet = keysSet || f.Name == "keys" })
	switch {
	case *workloadName != bench.WorkloadW1 && *workloadName != bench.WorkloadKeyed:
		return fmt.Errorf("--workload %q: want %s or %s", *workloadName, bench.WorkloadW1, bench.WorkloadKeyed)
	case *workloadName == bench.WorkloadW1 && keysSet:
		return errors.New("--keys goes with --workload keyed")
	case *keys < 1:
		return fmt.Errorf("--keys %d: want at least 1", *keys)
	case *workloadName == bench.WorkloadKeyed && (*raw || *compare):
		return errors.New("--workload keyed goes with the client and --frames modes, not --raw or --compare")
	case fresh.on && *compare:
		return errors.New("--mirror-freshness goes with one run, not --compare")
	}
	dopts, err := cf.dialOptions()
	if err != nil {
		return err
	}
	secOpts, err := cf.clientOptions()
	if err != nil {
		return err
	}
	if *duration <= 0 && *entries <= 0 {
		return errors.New("set --duration or --entries")
	}
	if *rate < 0 {
		return errors.New("--rate must not be negative")
	}
	if *rate > 0 {
		*frames = true
	}
	if *frames && (*raw || *compare) {
		return errors.New("--frames and --rate go with neither --raw nor --compare")
	}
	probe := bench.CPUProbe{MetricsAddr: *metricsAddr, InProcess: *addr == ""}
	memProbe := bench.MemoryProbe{MetricsAddr: probe.MetricsAddr, InProcess: probe.InProcess}
	if *addr == "" {
		if startServer == nil {
			return errors.New("--addr is required")
		}
		if hint := listeningHint(ctx, defaultGRPCAddr); hint != "" {
			fmt.Fprintln(stderr, hint)
		}
		a, stop, err := startServer(ctx, *mirror)
		if err != nil {
			return fmt.Errorf("starting a server: %w", err)
		}
		defer func() {
			if serr := stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stopping the in-process server: %w", serr))
			}
		}()
		*addr = a
		fmt.Fprintf(stderr, "bench: in-process server on %s\n", a)
	} else if err := checkReachable(ctx, *addr, dopts...); err != nil {
		return err
	}
	cfg := bench.Config{
		Addr:        *addr,
		Sources:     *sources,
		Duration:    *duration,
		Entries:     *entries,
		BatchSize:   *batch,
		MaxPending:  *pending,
		TablePrefix: *tablePrefix,
		Rate:        *rate,
		// TLS and token, from the connection flags.
		DialOptions:   dopts,
		ClientOptions: secOpts,
		Grace:         *grace,
		Workload:      *workloadName,
		Keys:          *keys,
	}
	// flush asks the server to commit, bounded by --flush-timeout: a
	// server that stopped answering must not hang the run. It is not
	// --grace, the wait for acks: the server acks what its log holds, and
	// on a slow machine it took 40 s to commit what a 10-s run left.
	flush := func() error {
		fctx, cancel := context.WithTimeout(ctx, *flushTimeout)
		defer cancel()
		_, err := bench.FlushServer(fctx, cfg.Addr, dopts...)
		return err
	}
	// measured runs one load with the CPU probe around it. When the server's
	// CPU is read, the server first commits what it buffered before (not
	// this run's cost) and at the end what the run left buffered (this
	// run's Parquet and commit cost).
	measured := func(run func(context.Context, bench.Config) (*bench.Summary, error)) (*bench.Summary, error) {
		serverCPU := probe.MetricsAddr != "" || probe.InProcess
		if serverCPU {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		cpu, err := probe.Start(ctx)
		if err != nil {
			return nil, err
		}
		mem := memProbe.Start(ctx)
		stopMem := sync.OnceValue(func() *bench.MemoryReport { return mem.Stop(ctx) })
		defer stopMem()
		var waitFresh func() (*bench.FreshnessReport, error)
		if fresh.on {
			if waitFresh, err = fresh.start(ctx, cfg.Addr, dopts, *tablePrefix, *grace, stderr); err != nil {
				return nil, err
			}
		}
		s, err := run(ctx, cfg)
		if waitFresh != nil {
			rep, ferr := waitFresh()
			if err == nil && ferr != nil {
				err = fmt.Errorf("--mirror-freshness: %w", ferr)
			}
			if s != nil {
				s.Freshness = rep
			}
		}
		if err != nil {
			return nil, err
		}
		var flushErr error
		if serverCPU {
			// The run's figures stand if this fails; the CPU figure is
			// still reported, marked as missing (part of) the commit of
			// what the run left buffered.
			fmt.Fprintf(stderr, "bench: the server commits what the run left buffered (part of its CPU figure; --flush-timeout %v)\n", *flushTimeout)
			started := time.Now()
			if flushErr = flush(); flushErr == nil {
				fmt.Fprintf(stderr, "bench: committed in %v\n", time.Since(started).Round(100*time.Millisecond))
			}
		}
		if s.CPU, err = cpu.Stop(ctx, s.Entries); err != nil {
			return nil, err
		}
		s.Memory = stopMem()
		if flushErr != nil {
			s.Errors++
			s.ErrorMessages = append(s.ErrorMessages, fmt.Sprintf("flush after the run: %v", flushErr))
			s.CPU.Note = "the flush after the run failed: server CPU may leave out committing what the run left buffered"
		}
		return s, nil
	}
	if *progress > 0 {
		cfg.Progress, cfg.ProgressInterval = stderr, *progress
	}
	var out any
	switch {
	case *compare:
		cs, err := measured(bench.Run)
		if err != nil {
			return err
		}
		// Start the baseline from an empty server buffer.
		if err := flush(); err != nil {
			return err
		}
		rs, err := measured(bench.RawStreamConfig)
		if err != nil {
			return err
		}
		cmp := &benchComparison{Client: cs, Raw: rs}
		if rs.EntriesPerSec > 0 {
			cmp.Ratio = cs.EntriesPerSec / rs.EntriesPerSec
		}
		if !*asJSON {
			fmt.Fprintln(stdout, cs)
			fmt.Fprintln(stdout, rs)
			fmt.Fprintf(stdout, "client/raw throughput ratio: %.2f\n", cmp.Ratio)
			return unackedError(*grace, cs, rs)
		}
		out = cmp
	case *raw:
		rs, err := measured(bench.RawStreamConfig)
		if err != nil {
			return err
		}
		out = rs
	case *frames:
		fs, err := measured(bench.Frames)
		if err != nil {
			return err
		}
		out = fs
	default:
		cs, err := measured(bench.Run)
		if err != nil {
			return err
		}
		out = cs
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, out)
	}
	switch o := out.(type) {
	case *benchComparison:
		return unackedError(*grace, o.Client, o.Raw)
	case *bench.Summary:
		return unackedError(*grace, o)
	}
	return nil
}

// unackedError is the run's failure when entries stayed unacknowledged (the
// summary, already printed, has the details), so that the exit status says
// the run did not complete.
func unackedError(grace time.Duration, runs ...*bench.Summary) error {
	var batches, entries uint64
	for _, s := range runs {
		batches += s.UnackedBatches
		entries += s.UnackedEntries
	}
	if entries == 0 && batches == 0 {
		return nil
	}
	return fmt.Errorf("bench: %d entries in %d batches were not acknowledged (--grace %v)", entries, batches, grace)
}
