package main

import (
	"flag"
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
