package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/server"
)

// runBenchCmd runs `lakehouse bench`; without --addr it benchmarks a server
// started in this process on a temporary data directory, with the default
// Iceberg sink and durable (fsync'd) acks.
func runBenchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBench(ctx, args, stdout, stderr, startInProcess)
}

func startInProcess(ctx context.Context) (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "lakehouse-bench-")
	if err != nil {
		return "", nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dir, Logger: log})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	srv, err := server.New(ctx, server.Config{DataDir: dir, Sink: sk, Logger: log})
	if err != nil {
		sk.Close()
		os.RemoveAll(dir)
		return "", nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		sk.Close()
		os.RemoveAll(dir)
		return "", nil, err
	}
	gs := grpc.NewServer(srv.GRPCOptions()...)
	srv.Register(gs)
	go gs.Serve(lis)
	return lis.Addr().String(), func() {
		srv.Shutdown(context.Background())
		gs.Stop()
		sk.Close()
		os.RemoveAll(dir)
	}, nil
}
