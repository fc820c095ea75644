package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestRecoveryMaxDelayFlag: --recovery-max-delay reaches the server's
// recovery schedule, and a value below 100ms is refused naming the flag.
func TestRecoveryMaxDelayFlag(t *testing.T) {
	fs, o := serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"--recovery-max-delay", "5s"}); err != nil || o.cfg.RecoveryMaxDelay != 5*time.Second {
		t.Errorf("--recovery-max-delay 5s: server's RecoveryMaxDelay %v (%v), want 5s", o.cfg.RecoveryMaxDelay, err)
	}
	err := serve(context.Background(), []string{"--recovery-max-delay", "0s", "--data-dir", t.TempDir()}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--recovery-max-delay") {
		t.Errorf("serve --recovery-max-delay 0s: %v, want an error naming the flag", err)
	}
}
