package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestLimitFlagsValidated: a bad limit stops serve before it opens anything,
// with an error naming the flag.
func TestLimitFlagsValidated(t *testing.T) {
	for _, args := range [][]string{
		{"--max-batch-entries", "0"},
		{"--max-message-bytes", "17000000"},
		{"--source-rate-entries", "-1"},
		{"--source-rate-bytes", "NaN"},
		{"--max-streams", "-2"},
		{"--max-ws-conns-per-addr", "-1"},
		{"--http-read-header-timeout", "0s"},
		{"--grpc-keepalive-time", "10ms"},
		{"--min-manual-flush-interval", "-1s"},
	} {
		err := serve(context.Background(), append(args, "--data-dir", t.TempDir()), io.Discard, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("serve %v: %v, want an error naming %s", args, err, args[0])
		}
	}
}
