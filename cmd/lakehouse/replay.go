package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dot-do/lakehouse-rpc/server"
)

// replayDoc is replay's help text.
const replayDoc = `Opens a data directory whose instance will not come back (a dead instance's disk,
mounted elsewhere), commits every batch of its write-ahead log through the catalog,
and exits 0 once the log is drained. It runs no listeners. Give it the catalog,
warehouse and coordination flags the instance ran with. The watermarks skip what
is already committed; with --coordination catalog it runs as that instance (its
instance.id) and resumes each source's lease at the epoch its logged batches were
accepted under, so a source that moved to another instance meanwhile is not
committed here (its batches are reported as dropped). See docs/scale-out.md.`

// KeyReplayTimeout bounds a replay: failed commits are retried until then.
const (
	KeyReplayTimeout     = "timeout"
	DefaultReplayTimeout = 10 * time.Minute
)

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		cfg     server.Config
		sf      sinkFlags
		cf      coordFlags
		level   string
		timeout time.Duration
	)
	fs.StringVar(&cfg.DataDir, "data-dir", "", "the dead instance's data directory (required)")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&timeout, KeyReplayTimeout, DefaultReplayTimeout, "give up (exit 1, the log stays) if the log is not drained by then; failed commits are retried until then")
	fs.Int64Var(&cfg.FlushBytes, "flush-bytes", 32<<20, "the most one commit takes from the log")
	fs.DurationVar(&cfg.CommitTimeout, "commit-timeout", server.DefaultCommitTimeout, "bound on each staging, commit and start-up read of the catalog and store")
	sf.register(fs)
	sf.mirror = &mirrorFlags{}
	sf.mirror.register(fs, true)
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return errors.New("--data-dir is required: the dead instance's data directory")
	}
	if st, err := os.Stat(filepath.Join(cfg.DataDir, "wal")); err != nil || !st.IsDir() {
		return fmt.Errorf("--data-dir %s: no write-ahead log there (%s/wal): is it an instance's data directory?", cfg.DataDir, cfg.DataDir)
	}
	if timeout <= 0 {
		return fmt.Errorf("--%s: %v must be positive", KeyReplayTimeout, timeout)
	}
	log, err := newLogger(stderr, level)
	if err != nil {
		return err
	}
	if err := sf.checkCatalog(); err != nil {
		return err
	}
	if err := cf.validate(&sf); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	leases, err := cf.open(ctx, &sf, cfg.DataDir, "")
	if err != nil {
		return err
	}
	if leases != nil {
		defer leases.Close()
		cfg.Coordinator = leases
		cf.applySink(&sf, leases, cfg.FlushInterval)
	}
	sk, err := sf.open(ctx, cfg.DataDir, log)
	if err != nil {
		return err
	}
	defer sk.Close()
	cfg.Sink, cfg.Logger = sk, log
	start := time.Now()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	res, derr := srv.Drain(ctx)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer scancel()
	if err := errors.Join(derr, srv.Shutdown(sctx)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %s: %d batches, %d entries committed; %d batches dropped (their sources moved to another instance) in %s\n",
		cfg.DataDir, res.Batches, res.Entries, res.Dropped, time.Since(start).Round(time.Millisecond))
	return nil
}
