package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/server"
)

// TestElectedCommitterDefault: the elected committer is on whenever
// --coordination is; given explicitly without --coordination it is an
// error, and it works with --mirror (the committer commits the mirror
// tables too). The environment sets it as the command line does.
func TestElectedCommitterDefault(t *testing.T) {
	pg := []string{"--catalog-uri", "postgres://u@h/db"}
	for _, tc := range []struct {
		name    string
		args    []string
		env     string // LAKEHOUSE_ELECTED_COMMITTER
		on      bool
		wantErr string
	}{
		{name: "single instance", args: nil},
		{name: "coordinated", args: append([]string{"--coordination", "catalog"}, pg...), on: true},
		{name: "coordinated, off", args: append([]string{"--coordination", "catalog", "--elected-committer=false"}, pg...)},
		{name: "coordinated, off by env", args: append([]string{"--coordination", "catalog"}, pg...), env: "false"},
		{name: "given without coordination", args: []string{"--elected-committer"}, wantErr: "--elected-committer needs --coordination=catalog"},
		{name: "given by env without coordination", env: "true", wantErr: "--elected-committer needs --coordination=catalog"},
		{name: "off without coordination", args: []string{"--elected-committer=false"}},
		{name: "mirror by default", args: append([]string{"--coordination", "catalog", "--mirror"}, pg...), on: true},
		{name: "mirror, committer off", args: append([]string{"--coordination", "catalog", "--mirror", "--elected-committer=false"}, pg...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("LAKEHOUSE_ELECTED_COMMITTER", tc.env)
			}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var (
				cf coordFlags
				sf sinkFlags
			)
			cf.register(fs)
			sf.register(fs)
			sf.mirror = &mirrorFlags{}
			fs.BoolVar(&sf.mirror.on, "mirror", false, "")
			if err := parseFlags(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			err := cf.validate(&sf)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("validate: %v, want an error containing %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.wantErr == "" && cf.electedCommitter() != tc.on:
				t.Errorf("elected committer %v, want %v", cf.electedCommitter(), tc.on)
			}
		})
	}
}

// TestElectedCommitterCommitTimeout: with the elected committer, a
// --commit-timeout below twice --flush-interval is reported (an early
// commit waits up to an interval and a quarter for the committer), twice
// the interval, the defaults, and any timeout with the committer off are
// not; 0 is the default's 2 minutes. serve logs it as a warning naming
// both flags, before it opens anything; it is not refused, since a long
// interval with manual commits alone works (integration tests use 1h).
func TestElectedCommitterCommitTimeout(t *testing.T) {
	coordinated := []string{"--coordination", "catalog", "--catalog", "sql", "--catalog-uri", "postgres://u@127.0.0.1:1/db"}
	for _, tc := range []struct {
		name  string
		args  []string
		short bool
	}{
		{"defaults", nil, false},
		{"twice the interval", []string{"--flush-interval", "1m", "--commit-timeout", "2m"}, false},
		{"below twice", []string{"--flush-interval", "1m", "--commit-timeout", "90s"}, true},
		{"interval above the default timeout", []string{"--flush-interval", "5m"}, true},
		{"zero is the default", []string{"--flush-interval", "2m", "--commit-timeout", "0s"}, true},
		{"committer off", []string{"--flush-interval", "5m", "--elected-committer=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cf coordFlags
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cf.register(fs)
			interval := fs.Duration("flush-interval", 30*time.Second, "")
			timeout := fs.Duration("commit-timeout", server.DefaultCommitTimeout, "")
			fs.String("catalog", "", "")
			fs.String("catalog-uri", "", "")
			if err := parseFlags(fs, append(append([]string(nil), coordinated...), tc.args...)); err != nil {
				t.Fatal(err)
			}
			if got := cf.committerTimeoutShort(*interval, *timeout); got != tc.short {
				t.Fatalf("committerTimeoutShort = %v, want %v", got, tc.short)
			}
		})
	}
	// serve warns before it opens the lease store (the catalog address
	// above is unreachable, so it fails there).
	var stderr bytes.Buffer
	err := serve(context.Background(), append(append([]string(nil), coordinated...),
		"--flush-interval", "1m", "--commit-timeout", "1m", "--data-dir", t.TempDir()), io.Discard, &stderr, nil)
	if err == nil {
		t.Fatal("serve with an unreachable catalog succeeded")
	}
	if log := stderr.String(); !strings.Contains(log, "--commit-timeout is below twice --flush-interval") || !strings.Contains(log, "want_at_least=2m0s") {
		t.Fatalf("serve's log has no --commit-timeout warning:\n%s", log)
	}
}
