package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lakehouse.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `# a comment
data-dir: /srv/lake
flush-interval: 5s
grpc-addr: 0.0.0.0:1
wal-max-bytes: 2048
no-maintenance: true
catalog-props:
  s3.region: us-east-1
  s3.endpoint: http://127.0.0.1:9000
`)
	t.Setenv("LAKEHOUSE_FLUSH_INTERVAL", "7s") // environment beats the file
	fs, o := serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"--config", path, "--grpc-addr", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if o.cfg.DataDir != "/srv/lake" || o.cfg.WALMaxBytes != 2048 || !*o.noMaint {
		t.Errorf("file values not applied: %+v noMaint=%v", o.cfg, *o.noMaint)
	}
	if o.cfg.FlushInterval != 7*time.Second {
		t.Errorf("flush-interval %v: the environment should beat the file", o.cfg.FlushInterval)
	}
	if *o.grpcAddr != "127.0.0.1:2" {
		t.Errorf("grpc-addr %q: the flag should beat the file", *o.grpcAddr)
	}
	if o.sf.props != "s3.endpoint=http://127.0.0.1:9000,s3.region=us-east-1" {
		t.Errorf("catalog-props %q", o.sf.props)
	}
	if o.cfg.FlushEntries != 10000 || *o.httpAddr != "127.0.0.1:8080" {
		t.Errorf("defaults lost: %d %q", o.cfg.FlushEntries, *o.httpAddr)
	}

	// LAKEHOUSE_CONFIG names the file when --config does not; --config=F works.
	t.Setenv("LAKEHOUSE_CONFIG", path)
	fs, o = serveFlagSet(io.Discard)
	if err := parseFlags(fs, nil); err != nil || o.cfg.DataDir != "/srv/lake" {
		t.Fatalf("LAKEHOUSE_CONFIG: %v %q", err, o.cfg.DataDir)
	}
	other := writeConfig(t, "data-dir: /other\n")
	fs, o = serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"-config=" + other}); err != nil || o.cfg.DataDir != "/other" {
		t.Fatalf("--config=: %v %q", err, o.cfg.DataDir)
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"unknown key", "data-dir: x\n\nflush-intervall: 5s\n", []string{":3:", `unknown key "flush-intervall"`}},
		{"config key", "config: other.yaml\n", []string{":1:", `unknown key "config"`}},
		{"bad value", "data-dir: x\nflush-entries: lots\n", []string{":2:", `key "flush-entries"`, "invalid value"}},
		{"repeated key", "data-dir: a\ndata-dir: b\n", []string{":2:", `"data-dir" repeats line 1`}},
		{"nested", "grpc-addr:\n  host: x\n", []string{":2:", `key "grpc-addr"`, "not a mapping"}},
		{"list", "data-dir: [a, b]\n", []string{":1:", "want a single value"}},
		{"not a mapping", "- data-dir\n", []string{":1:", "want a mapping"}},
		{"syntax", "data-dir: x\n  bad: : indent\n", []string{"lakehouse.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text)
			fs, _ := serveFlagSet(io.Discard)
			err := parseFlags(fs, []string{"--config", path})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	// An empty file sets nothing; a missing one is an error.
	fs, o := serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"--config", writeConfig(t, "# nothing\n")}); err != nil || o.cfg.DataDir != "./data" {
		t.Errorf("empty file: %v %q", err, o.cfg.DataDir)
	}
	fs, _ = serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}); err == nil {
		t.Error("missing file: no error")
	}
}

// TestExampleConfigLoads: the example file in the repository sets every
// flag of serve to its default.
func TestExampleConfigLoads(t *testing.T) {
	fs, o := serveFlagSet(io.Discard)
	if err := parseFlags(fs, []string{"--config", "../../lakehouse.example.yaml"}); err != nil {
		t.Fatal(err)
	}
	vals, _, err := loadConfigFile("../../lakehouse.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	missing := []string{}
	fs.VisitAll(func(f *flagT) {
		if _, ok := vals[f.Name]; !ok && f.Name != configFlag {
			missing = append(missing, f.Name)
		}
	})
	if len(missing) > 0 {
		t.Errorf("lakehouse.example.yaml lacks %v", missing)
	}
	if o.cfg.DataDir != "./data" || o.cfg.FlushInterval != 30*time.Second {
		t.Errorf("example does not hold the defaults: %+v", o.cfg)
	}
}
