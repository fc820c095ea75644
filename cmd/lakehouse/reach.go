package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// reachTimeout bounds the first contact with a server.
const reachTimeout = 10 * time.Second

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
