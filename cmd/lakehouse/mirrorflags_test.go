package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// TestMirrorSchemasFlag: --mirror-schemas reads and validates the pinned
// schemas file; errors name the flag, the file and the field.
func TestMirrorSchemasFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("tables:\n  users:\n    key: id\n    columns: {age: long}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("tables:\n  users:\n    columns: {age: number}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (iceberg.Config, error) {
		var m mirrorFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		m.register(fs, true)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var cfg iceberg.Config
		return cfg, m.apply(&cfg)
	}
	cfg, err := parse("--mirror-schemas", good, "--mirror-infer-timestamps", "--mirror-tombstone-retention", "2h")
	if err != nil || cfg.MirrorSchemas["users"].Key != "id" || !cfg.MirrorInferTimestamps || cfg.MirrorTombstoneRetention.Hours() != 2 {
		t.Fatalf("%+v, %v", cfg, err)
	}
	for file, want := range map[string]string{bad: "tables.users.columns.age: unknown type", filepath.Join(dir, "none.yaml"): "no such file"} {
		if _, err := parse("--mirror-schemas", file); err == nil || !strings.Contains(err.Error(), "--mirror-schemas") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// TestMirrorOnByDefault: serve and replay keep mirror tables unless told
// not to (issue 16); --mirror=false, LAKEHOUSE_MIRROR=false and
// `mirror: false` in the YAML file turn them off.
func TestMirrorOnByDefault(t *testing.T) {
	mirrorOf := func(args ...string) bool {
		t.Helper()
		fs, o := serveFlagSet(io.Discard)
		if err := parseFlags(fs, args); err != nil {
			t.Fatal(err)
		}
		cfg, err := o.sf.icebergConfig(t.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Mirror
	}
	if !mirrorOf() {
		t.Error("serve: mirrors off by default")
	}
	if mirrorOf("--mirror=false") {
		t.Error("serve --mirror=false: mirrors on")
	}
	if mirrorOf("--config", writeConfig(t, "mirror: false\n")) {
		t.Error("mirror: false in the config file: mirrors on")
	}
	t.Setenv("LAKEHOUSE_MIRROR", "false")
	if mirrorOf() {
		t.Error("LAKEHOUSE_MIRROR=false: mirrors on")
	}
	if !mirrorOf("--mirror") {
		t.Error("--mirror beats LAKEHOUSE_MIRROR=false: mirrors off")
	}
}

// TestMirrorExcludeFlag: --mirror-exclude takes a comma-separated list of
// table names and patterns, spaces and empty items ignored.
func TestMirrorExcludeFlag(t *testing.T) {
	var m mirrorFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	m.register(fs, true)
	if err := fs.Parse([]string{"--mirror-exclude", " log_*, events,,"}); err != nil {
		t.Fatal(err)
	}
	var cfg iceberg.Config
	if err := m.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.MirrorExclude, "|"); got != "log_*|events" {
		t.Errorf("MirrorExclude %q, want log_* and events", cfg.MirrorExclude)
	}
	if err := fs.Parse([]string{"--mirror-exclude", "users,[a-"}); err != nil {
		t.Fatal(err)
	}
	if err := m.apply(&cfg); err == nil || !strings.Contains(err.Error(), `--mirror-exclude: mirror exclusion "[a-"`) {
		t.Errorf("a malformed pattern: %v, want a refusal naming the flag and the pattern", err)
	}
}
