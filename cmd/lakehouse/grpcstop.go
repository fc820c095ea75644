package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// grpcDrainMax bounds gRPC's graceful stop. It runs after the server's
// shutdown has ended every CDC stream, so what it still waits for is unary
// calls and clients closing their connections on GOAWAY. A health watch
// never ends by itself, and a stream whose peer stopped reading never
// finishes (its trailers wait behind the data the peer does not read):
// Stop cuts them after this long, or after half of the shutdown budget left
// if that is shorter, so the parts stopped after gRPC keep the rest.
const grpcDrainMax = 5 * time.Second

// stopGRPC stops gs gracefully for its share of ctx's budget, then
// forcibly. Stop closes every connection, which ends the sends blocked on
// them; it still waits for handshakes in progress (up to
// --grpc-handshake-timeout), and GracefulStop for handlers blocked
// elsewhere: neither is waited for past ctx.
func stopGRPC(ctx context.Context, gs *grpc.Server, log *slog.Logger) error {
	drain := grpcDrainMax
	if dl, ok := ctx.Deadline(); ok {
		drain = min(drain, time.Until(dl)/2)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(max(drain, 0))
	defer t.Stop()
	select {
	case <-stopped:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	log.Warn("gRPC calls still open after the drain period are cut", "drain", drain.Round(time.Millisecond))
	go gs.Stop()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gRPC connections or handlers still open after the shutdown timeout: %w", ctx.Err())
	}
}
