package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.FailedPrecondition, "connect may only be the first message"), true},
		{fmt.Errorf("client: waiting for connected: %w", status.Error(codes.InvalidArgument, "x")), true},
		{status.Error(codes.PermissionDenied, "x"), true},
		{status.Error(codes.Unauthenticated, "x"), true},
		{status.Error(codes.Unimplemented, "x"), true},
		{streamErr(status.Error(codes.Aborted, "fenced"), nil), true},
		{status.Error(codes.Unavailable, "x"), false},
		{status.Error(codes.Internal, "x"), false},
		{status.Error(codes.ResourceExhausted, "x"), false},
		{streamErr(nil, nil), false}, // the server ended the stream
		{fmt.Errorf("%w: batch 3", ErrAckTimeout), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestPermanentStatusNotRetried: a stream refused with a permanent code
// fails the client at once; a transient one is retried.
func TestPermanentStatusNotRetried(t *testing.T) {
	for _, code := range []codes.Code{codes.FailedPrecondition, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated} {
		t.Run(code.String(), func(t *testing.T) {
			f := startFake(t)
			f.refuse = status.Error(code, "scripted refusal")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := Dial(ctx, f.Addr(), "src", fastOpts(t)...)
			if !errors.Is(err, ErrFailed) || status.Code(err) != code {
				t.Fatalf("Dial: %v, want a failure with %s", err, code)
			}
			if connects, _, _ := f.counts(); connects != 1 {
				t.Fatalf("%d connects for a permanent error", connects)
			}
		})
	}
	t.Run("Unavailable is retried", func(t *testing.T) {
		f := startFake(t)
		f.refuse = status.Error(codes.Unavailable, "scripted refusal")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := Dial(ctx, f.Addr(), "src", append(fastOpts(t), WithReconnect(time.Millisecond, 3))...)
		if !errors.Is(err, ErrFailed) || status.Code(err) != codes.Unavailable {
			t.Fatalf("Dial: %v", err)
		}
		if connects, _, _ := f.counts(); connects != 4 {
			t.Fatalf("%d connects, want 1 + 3 reconnect attempts", connects)
		}
	})
}
