package main

import (
	"flag"
	"io"
	"strings"
	"testing"
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
