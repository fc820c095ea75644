package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// reachTimeout bounds the first contact with a server.
const reachTimeout = 10 * time.Second

// The listen addresses of `serve`, and the server address of the commands
// that talk to one.
const (
	defaultGRPCAddr = "127.0.0.1:50051"
	defaultHTTPAddr = "127.0.0.1:8080"
)

// listenerProbeTimeout bounds the look for a server at the default address
// (listeningHint).
const listenerProbeTimeout = 200 * time.Millisecond

// listeningHint returns, when something accepts connections at addr, a line
// telling a `bench` run without --addr that it does not load that server:
// a user who started `serve` and then `bench` expects to see its figures
// (and its tables) change, and would otherwise measure an in-process server
// on a temporary directory without noticing.
func listeningHint(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, listenerProbeTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return ""
	}
	conn.Close()
	return fmt.Sprintf("bench: a server listens on %s, but without --addr bench loads a server of its own, in this process, "+
		"on a temporary data directory; pass --addr %s to load that one", addr, addr)
}

// checkReachable fails fast, with the transport's own error (for example
// "connection refused"), when no server answers at addr. The Go client keeps
// retrying connections, which is right for a server that was up and went
// away but turned a mistyped or dead address into a timeout long after the
// fact; so the commands that use it look first. One health check is enough:
// an RPC that does not wait for readiness fails as soon as the first
// connection attempt does.
func checkReachable(ctx context.Context, addr string, opts ...grpc.DialOption) error {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return fmt.Errorf("server %s: %w", addr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, reachTimeout)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	switch status.Code(err) {
	case codes.OK, codes.Unimplemented, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
		return nil // something answers; the command's own calls say the rest
	case codes.DeadlineExceeded:
		return fmt.Errorf("server %s did not answer within %v", addr, reachTimeout)
	}
	return fmt.Errorf("server %s is not reachable: %s", addr, status.Convert(err).Message())
}
