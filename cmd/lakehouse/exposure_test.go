package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig/tlstest"
)

// TestServeRefusesExposureWithoutProtection runs serve on non-loopback
// addresses: without TLS or tokens it refuses to start unless --insecure,
// which warns; with either it starts. Loopback needs nothing.
func TestServeRefusesExposureWithoutProtection(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.yaml")
	writeFile(t, tokens, "tokens:\n  - name: a\n    hash: "+auth.Hash("secret")+"\n    sources: [a]\n")
	ca := tlstest.NewCA(t, "root")
	cert := ca.Server(t, "server")
	run := func(args ...string) (started bool, log string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var stderr bytes.Buffer
		base := []string{"--data-dir", t.TempDir(), "--sink", "jsonl", "--no-maintenance"}
		err = serve(ctx, append(base, args...), io.Discard, &stderr, func(string, string) { started = true; cancel() })
		return started, stderr.String(), err
	}
	for _, tc := range []struct {
		name  string
		args  []string
		start bool
	}{
		{"loopback, nothing set", []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, true},
		{"gRPC on every interface", []string{"--grpc-addr", ":0", "--http-addr", ""}, false},
		{"HTTP on every interface", []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0"}, false},
		{"with --insecure", []string{"--grpc-addr", "0.0.0.0:0", "--http-addr", "", "--insecure"}, true},
		{"with tokens", []string{"--grpc-addr", "0.0.0.0:0", "--http-addr", "0.0.0.0:0", "--auth-tokens", tokens}, true},
		{"with TLS", []string{"--grpc-addr", "0.0.0.0:0", "--http-addr", "", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, true},
	} {
		started, log, err := run(tc.args...)
		if started != tc.start {
			t.Errorf("%s: started %v, want %v (err %v)", tc.name, started, tc.start, err)
		}
		if !tc.start && (err == nil || !strings.Contains(err.Error(), "--insecure")) {
			t.Errorf("%s: error %v does not point at --insecure", tc.name, err)
		}
		if insecure := strings.Contains(log, "INSECURE"); insecure != (tc.name == "with --insecure") {
			t.Errorf("%s: warning printed %v\n%s", tc.name, insecure, log)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
