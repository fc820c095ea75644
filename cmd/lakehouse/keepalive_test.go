package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestKeepaliveFlagErrors: keepalive settings out of range are refused with
// the flag's name, not clamped silently by gRPC.
func TestKeepaliveFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--grpc-keepalive-time", "500ms"}, "--grpc-keepalive-time 500ms"},
		{[]string{"--grpc-keepalive-timeout", "0s"}, "--grpc-keepalive-timeout 0s"},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		args := append([]string{"--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", ""}, tc.args...)
		err := runServe(t.Context(), args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
