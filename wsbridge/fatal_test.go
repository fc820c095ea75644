package wsbridge

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/internal/rpcstatus"
)

// TestFatalUpstreamSharedCodes: the bridge closes a legacy child's WebSocket
// for exactly the permanent codes the Go client does not retry.
func TestFatalUpstreamSharedCodes(t *testing.T) {
	for c := codes.OK + 1; c <= codes.Unauthenticated; c++ {
		if got, want := fatalUpstream(status.Error(c, "x")), rpcstatus.IsPermanent(c); got != want {
			t.Errorf("fatalUpstream(%s) = %v, want %v", c, got, want)
		}
	}
	for _, c := range []codes.Code{codes.FailedPrecondition, codes.Aborted, codes.Unauthenticated} {
		if !fatalUpstream(status.Error(c, "x")) {
			t.Errorf("%s is not fatal", c)
		}
	}
	for _, err := range []error{nil, errors.New("dial tcp: connection refused"), status.Error(codes.Unavailable, "x")} {
		if fatalUpstream(err) {
			t.Errorf("fatalUpstream(%v) = true", err)
		}
	}
}
