package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errFenced       = errors.New("server: stream fenced by a newer stream for the same source")
	errShuttingDown = errors.New("server: shutting down")
	errClosed       = errors.New("server: closed")
	errStreamEnded  = errors.New("server: stream ended")
	// errLeaseLost ends a stream whose source's lease another instance
	// took (lease.go): a fenced stream, retried elsewhere.
	errLeaseLost = fmt.Errorf("%w: the source's lease was taken by another instance", errFenced)
	// errLeaseExpired ends a stream whose source's lease this instance
	// could not renew in time (the lease store unreachable, the instance
	// paused): another instance may own the source now. Retryable.
	errLeaseExpired = errors.New("server: the source's lease expired without renewal (lease store unreachable or this instance stalled); reconnect: any instance takes the source once it can reach the lease store")
)

// statusFromErr maps the server's errors to gRPC statuses. An error that
// already carries a status (made where the cause was known, for example
// FailedPrecondition for a second connect) is returned as it is: re-wrapping
// it as Internal would hide the code clients decide to reconnect by.
func statusFromErr(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, errFenced):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, errShuttingDown), errors.Is(err, errClosed), errors.Is(err, errLeaseExpired):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
