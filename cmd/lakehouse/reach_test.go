package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestDeadServerFailsFast points send and bench at an address where nothing
// listens: they fail within seconds, saying the connection was refused.
func TestDeadServerFailsFast(t *testing.T) {
	addr := deadAddr(t)
	tests := []struct {
		name string
		run  func() error
	}{
		{"send", func() error {
			var out, errb bytes.Buffer
			return sendCommand(t.Context(), []string{"--addr", addr, "--source", "s"}, strings.NewReader(""), &out, &errb)
		}},
		{"bench", func() error {
			var out, errb bytes.Buffer
			return runBench(t.Context(), []string{"--addr", addr, "--duration", "1s", "--progress", "0"}, &out, &errb, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), "connection refused") || time.Since(start) > 5*time.Second {
				t.Fatalf("%s against a dead server: %v after %v; want a \"connection refused\" error within 5 s", tc.name, err, time.Since(start))
			}
		})
	}
}

// TestListeningHint: bench without --addr says so when a server (anything
// accepting connections) listens at the address it would otherwise have
// loaded, and says nothing when none does.
func TestListeningHint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	hint := listeningHint(t.Context(), addr)
	if !strings.Contains(hint, "a server listens on "+addr) || !strings.Contains(hint, "--addr "+addr) {
		t.Errorf("with a listener at %s: hint %q, want it named with the --addr to pass", addr, hint)
	}
	ln.Close()
	if hint := listeningHint(t.Context(), addr); hint != "" {
		t.Errorf("with nothing at %s: hint %q, want none", addr, hint)
	}
}
