// Package rpcstatus classifies the gRPC status codes of the CDC service for
// its clients: the Go client (client/) and the WebSocket bridge (wsbridge/)
// use the same list to decide that a stream error will not go away by
// reconnecting.
package rpcstatus

import (
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// permanentCodes are the codes a retry of the same stream cannot fix:
//
//   - InvalidArgument: the request is malformed (e.g. a bad connect);
//   - FailedPrecondition: the request is not valid in the stream's state
//     (e.g. a second connect on a stream);
//   - PermissionDenied, Unauthenticated: the credentials do not allow it;
//   - Unimplemented: the server does not offer the method;
//   - Aborted: a newer stream for the same source fenced this one.
//
// Transient codes (Unavailable, DeadlineExceeded, ResourceExhausted,
// Internal, Unknown, Canceled...) are not in the list.
var permanentCodes = []codes.Code{
	codes.InvalidArgument,
	codes.FailedPrecondition,
	codes.PermissionDenied,
	codes.Unauthenticated,
	codes.Unimplemented,
	codes.Aborted,
}

// PermanentCodes returns the permanent codes (a copy).
func PermanentCodes() []codes.Code { return slices.Clone(permanentCodes) }

// IsPermanent reports whether code is permanent.
func IsPermanent(code codes.Code) bool { return slices.Contains(permanentCodes, code) }

// Permanent reports whether err carries (or wraps) a gRPC status with a
// permanent code.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	return IsPermanent(status.Code(err))
}
