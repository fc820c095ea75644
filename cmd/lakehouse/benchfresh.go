package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/apache/iceberg-go/table"
	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// freshnessFlags are bench's --mirror-freshness options: a probe that
// writes marker rows while the load runs and polls the mirror table
// through the catalog, as an outside reader, until each is visible.
type freshnessFlags struct {
	on      bool
	dataDir string
	sf      sinkFlags
	marker  time.Duration
	poll    time.Duration
}

func (f *freshnessFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "mirror-freshness", false, "while the load runs, send a marker row every --marker-interval and poll its mirror table "+
		"through the catalog (--data-dir, --catalog...) every --poll-interval: report how long markers took to become visible (p50, p99, max)")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "with --mirror-freshness: the server's data directory (embedded catalog and warehouse)")
	f.sf.registerCatalog(fs)
	fs.DurationVar(&f.marker, "marker-interval", bench.DefaultMarkerInterval, "with --mirror-freshness: time between marker rows")
	fs.DurationVar(&f.poll, "poll-interval", bench.DefaultPollInterval, "with --mirror-freshness: time between polls of the mirror table (the delays' resolution)")
}

// start opens the catalog and starts the probe; the returned wait ends it
// (call it once the load is done) and returns its report.
func (f *freshnessFlags) start(ctx context.Context, addr string, dopts []grpc.DialOption, tablePrefix string, grace time.Duration,
	stderr io.Writer) (wait func() (*bench.FreshnessReport, error), err error) {
	switch {
	case f.marker <= 0:
		return nil, fmt.Errorf("--marker-interval %v must be positive", f.marker)
	case f.poll <= 0:
		return nil, fmt.Errorf("--poll-interval %v must be positive", f.poll)
	}
	cfg, err := f.sf.icebergConfig(f.dataDir, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		return nil, err
	}
	if err := f.sf.requireCatalog(f.dataDir); err != nil {
		return nil, err
	}
	reader, err := iceberg.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("--mirror-freshness: open the catalog: %w", err)
	}
	name := tablePrefix + bench.FreshnessTable
	pctx, stop := context.WithCancel(ctx)
	type result struct {
		rep *bench.FreshnessReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := bench.ProbeFreshness(pctx, bench.FreshnessConfig{
			Addr: addr, DialOptions: dopts, Table: name, MarkerInterval: f.marker, PollInterval: f.poll, Grace: grace,
			LoadMirror: func(ctx context.Context) (*table.Table, error) { return reader.LoadMirrorTable(ctx, name) },
		})
		done <- result{rep, err}
	}()
	return func() (*bench.FreshnessReport, error) {
		stop()
		r := <-done
		_ = reader.Close()
		return r.rep, r.err
	}, nil
}
