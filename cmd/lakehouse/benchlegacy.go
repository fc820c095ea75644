package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// legacyFlags are the flags of `lakehouse bench --legacy`.
type legacyFlags struct {
	legacy  bool
	wsAddr  string
	conns   int
	entries int
}

func (lf *legacyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&lf.legacy, "legacy", false, "legacy blast through the WebSocket bridge: --legacy-conns WebSockets, each sending "+
		"--legacy-entries W1 entries pre-encoded in --batch-entry frames of the legacy protocol, at most --pending unanswered; "+
		"reports acked entries/s and, from --metrics-addr (default --ws-addr), the server's CPU")
	fs.StringVar(&lf.wsAddr, "ws-addr", "", "with --legacy: the bridge's address (the server's --http-addr, or a standalone bridge's)")
	fs.IntVar(&lf.conns, "legacy-conns", bench.DefaultLegacyConns, "with --legacy: WebSockets")
	fs.IntVar(&lf.entries, "legacy-entries", bench.DefaultLegacyEntries, "with --legacy: entries each WebSocket sends")
}

// runLegacyBench runs the legacy blast and prints its summary.
func runLegacyBench(ctx context.Context, lf legacyFlags, batch, pending int, tablePrefix, metricsAddr string,
	grace time.Duration, asJSON bool, stdout io.Writer) error {
	if lf.wsAddr == "" {
		return errors.New("--legacy needs --ws-addr")
	}
	if metricsAddr == "" {
		metricsAddr = lf.wsAddr
	}
	s, err := bench.RunLegacy(ctx, bench.LegacyConfig{
		URL: "ws://" + lf.wsAddr + "/", Conns: lf.conns, Entries: lf.entries, BatchSize: batch, Pending: pending,
		TablePrefix: tablePrefix, Grace: grace, Probe: bench.CPUProbe{MetricsAddr: metricsAddr},
	})
	if s != nil {
		if asJSON {
			if jerr := json.NewEncoder(stdout).Encode(s); jerr != nil {
				return errors.Join(err, jerr)
			}
		} else {
			fmt.Fprintln(stdout, s)
		}
	}
	return err
}
