//go:build figures

package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
)

// TestFigures produces the W1 figures for 1, 8 and 64 sources, client vs raw
// stream, against an in-process server with fsync'd acks and the default
// Iceberg sink (BENCH_SINK=jsonl: the JSON-lines test sink instead;
// BENCH_SINK=none: ingest only, nothing flushed during the run), as
// `lakehouse bench` does. It is built only with the figures tag (it pulls in
// the Iceberg sink); BENCH_SECONDS sets the duration per run, default 5:
//
//	go test -tags figures -run TestFigures -v -count=1 ./internal/bench/
func startFigureServer(t *testing.T) string {
	t.Helper()
	switch os.Getenv("BENCH_SINK") {
	case "jsonl":
		return servertest.Start(t, servertest.WithSync(), servertest.WithConfig(quiet)).Addr
	case "none":
		// Ingest only: flushing off and a buffer that never fills, so the
		// raw stream is never refused and measures the transport's ceiling.
		return servertest.Start(t, servertest.WithSync(), servertest.WithConfig(func(c *server.Config) {
			quiet(c)
			c.MaxBufferBytes, c.WALMaxBytes = 16<<30, 16<<30
			c.FlushInterval, c.FlushAge = time.Hour, time.Hour
			c.FlushEntries, c.FlushBytes, c.PressureThreshold = 1<<40, 1<<40, 2
		})).Addr
	}
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{DataDir: dir, Sink: sk, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(srv.GRPCOptions()...)
	srv.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		gs.Stop()
		_ = sk.Close()
	})
	return lis.Addr().String()
}

func TestFigures(t *testing.T) {
	secs := 5
	if v, err := strconv.Atoi(os.Getenv("BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	addr := startFigureServer(t)
	var out strings.Builder
	fmt.Fprintf(&out, "\n| sources | mode | entries/s (to last ack) | MB/s | window entries/s | window MB/s | ack p50 ms | ack p99 ms | client/raw (total, window) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range []int{1, 8, 64} {
		ctx := context.Background()
		d := time.Duration(secs) * time.Second
		flush := func() {
			t.Helper()
			if os.Getenv("BENCH_SINK") == "none" {
				return
			}
			if _, err := FlushServer(ctx, addr); err != nil {
				t.Fatal(err)
			}
		}
		flush()
		cs, err := Run(ctx, Config{Addr: addr, Sources: n, Duration: d})
		if err != nil {
			t.Fatal(err)
		}
		flush()
		rs, err := RawStream(ctx, addr, n, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(cs)
		t.Log(rs)
		row := func(s *Summary, ratio string) {
			fmt.Fprintf(&out, "| %d | %s | %.0f | %.1f | %.0f | %.1f | %.1f | %.1f | %s |\n", n, s.Mode, s.EntriesPerSec, s.MBPerSec,
				s.WindowEntriesPerSec, s.WindowMBPerSec, s.AckLatency.P50Ms, s.AckLatency.P99Ms, ratio)
		}
		row(cs, fmt.Sprintf("%.2f, %.2f", cs.EntriesPerSec/rs.EntriesPerSec, cs.WindowEntriesPerSec/rs.WindowEntriesPerSec))
		row(rs, "")
	}
	t.Log(out.String())
}
