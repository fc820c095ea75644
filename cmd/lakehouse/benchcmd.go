package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// runBenchCmd runs `lakehouse bench`; without --addr it benchmarks a server
// started in this process on a temporary data directory, with the default
// Iceberg sink (mirror tables as --mirror says) and durable (fsync'd) acks.
func runBenchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBench(ctx, args, stdout, stderr, startInProcess)
}

func startInProcess(ctx context.Context, mirror bool) (addr string, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "lakehouse-bench-")
	if err != nil {
		return "", nil, err
	}
	log := slog.New(slog.DiscardHandler)
	a, err := startApp(ctx, appConfig{
		Server: server.Config{DataDir: dir, Logger: log},
		OpenSink: func(ctx context.Context) (sink.Sink, error) {
			return iceberg.Open(ctx, iceberg.Config{DataDir: dir, Logger: log, Mirror: mirror})
		},
		GRPCAddr: "127.0.0.1:0",
		Logger:   log,
	})
	if err != nil {
		return "", nil, errors.Join(err, os.RemoveAll(dir))
	}
	return a.grpcAddr(), func() error {
		return errors.Join(a.stop(context.WithoutCancel(ctx)), os.RemoveAll(dir))
	}, nil
}
