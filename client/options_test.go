package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestDefaults: the defaults are the documented ones (DESIGN.md, the
// original DEFAULT_CHILD_CONFIG).
func TestDefaults(t *testing.T) {
	cfg, err := newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.maxBatchEntries != 1000 || cfg.maxBatchBytes != 4<<20 || cfg.batchTimeout != time.Second ||
		cfg.maxRetries != 3 || cfg.retryDelay != 100*time.Millisecond || cfg.retryMultiplier != 2 || cfg.maxRetryDelay != 10*time.Second ||
		cfg.ackTimeout != 30*time.Second || cfg.reconnectDelay != time.Second || cfg.maxReconnectAttempts != 10 ||
		cfg.heartbeatInterval != 30*time.Second || cfg.maxPending != 100 || cfg.deliveryTimeout != 0 || cfg.mode != ModeBinary ||
		cfg.keepaliveTime != 30*time.Second || cfg.keepaliveTimeout != 10*time.Second {
		t.Fatalf("defaults %+v", cfg)
	}
	b := NewCircuitBreaker(cfg.breaker)
	if b.cfg.FailureThreshold != 5 || b.cfg.OpenTimeout != time.Second || b.cfg.MaxOpenTimeout != 30*time.Second {
		t.Fatalf("breaker defaults %+v", b.cfg)
	}
}

// TestOptionsValidated: out-of-range options make New and Dial fail with an
// error naming the option, instead of being ignored.
func TestOptionsValidated(t *testing.T) {
	cases := []struct {
		opt  Option
		name string
	}{
		{WithMaxBatchEntries(0), "WithMaxBatchEntries"},
		{WithMaxBatchEntries(-5), "WithMaxBatchEntries"},
		{WithMaxBatchBytes(0), "WithMaxBatchBytes"},
		{WithMaxBatchBytes(MaxBatchBytesLimit + 1), "WithMaxBatchBytes"},
		{WithBatchTimeout(0), "WithBatchTimeout"},
		{WithMaxRetries(-1), "WithMaxRetries"},
		{WithRetryBackoff(0, 2, time.Second), "WithRetryBackoff (initial)"},
		{WithRetryBackoff(time.Millisecond, 0.5, time.Second), "WithRetryBackoff (multiplier)"},
		{WithRetryBackoff(time.Second, 2, time.Millisecond), "WithRetryBackoff (maxDelay)"},
		{WithAckTimeout(-time.Second), "WithAckTimeout"},
		{WithDeliveryTimeout(-time.Second), "WithDeliveryTimeout"},
		{WithReconnect(time.Second, -1), "WithReconnect (maxAttempts)"},
		{WithReconnect(0, 3), "WithReconnect (delay)"},
		{WithHeartbeatInterval(-time.Second), "WithHeartbeatInterval"},
		{WithMaxPendingBatches(0), "WithMaxPendingBatches"},
		{WithMode(Mode(7)), "WithMode"},
		{WithBreaker(BreakerConfig{FailureThreshold: -1}), "WithBreaker (FailureThreshold)"},
		{WithBreaker(BreakerConfig{OpenTimeout: -1}), "WithBreaker (OpenTimeout)"},
		{WithShardName(strings.Repeat("x", 1<<16)), "WithShardName"},
		{WithKeepalive(5*time.Second, time.Second), "WithKeepalive (time)"},
		{WithKeepalive(-time.Second, time.Second), "WithKeepalive (time)"},
		{WithKeepalive(MinKeepaliveTime, 0), "WithKeepalive (timeout)"},
	}
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range cases {
		c, err := New(conn, "src", tc.opt)
		if c != nil || !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.name+":") {
			t.Errorf("New with a bad %s: %v", tc.name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = Dial(ctx, "127.0.0.1:1", "src", tc.opt)
		cancel()
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Dial with a bad %s: %v", tc.name, err)
		}
	}
	// Edge values that are valid.
	for _, opt := range []Option{
		WithMaxRetries(0), WithReconnect(0, 0), WithHeartbeatInterval(0), WithDeliveryTimeout(0),
		WithRetryBackoff(time.Second, 1, time.Second), WithMaxBatchBytes(MaxBatchBytesLimit), WithMaxPendingBatches(1),
		WithClock(nil), WithBreaker(BreakerConfig{}),
	} {
		c, err := New(conn, "src", opt)
		if err != nil {
			t.Fatalf("valid option refused: %v", err)
		}
		if err := c.Close(context.Background()); err != nil && !errors.Is(err, ErrFailed) {
			t.Fatalf("Close: %v", err)
		}
	}
}
