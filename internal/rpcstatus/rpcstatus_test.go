package rpcstatus

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPermanent(t *testing.T) {
	permanent := map[codes.Code]bool{
		codes.InvalidArgument:    true,
		codes.FailedPrecondition: true,
		codes.PermissionDenied:   true,
		codes.Unauthenticated:    true,
		codes.Unimplemented:      true,
		codes.Aborted:            true,
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		want := permanent[c]
		if got := IsPermanent(c); got != want {
			t.Errorf("IsPermanent(%s) = %v, want %v", c, got, want)
		}
		err := status.Error(c, "x")
		if got := Permanent(err); got != want && c != codes.OK {
			t.Errorf("Permanent(status %s) = %v, want %v", c, got, want)
		}
		// Wrapped status errors keep their code.
		if got := Permanent(fmt.Errorf("client: open stream: %w", err)); got != want && c != codes.OK {
			t.Errorf("Permanent(wrapped %s) = %v, want %v", c, got, want)
		}
	}
	for _, err := range []error{nil, errors.New("plain"), context.Canceled, context.DeadlineExceeded} {
		if Permanent(err) {
			t.Errorf("Permanent(%v) = true", err)
		}
	}
	if len(PermanentCodes()) != len(permanent) {
		t.Errorf("PermanentCodes() = %v", PermanentCodes())
	}
}
