package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadersNeedAnExistingCatalog runs scan and tables on a mistyped data
// directory: they fail with "no catalog at" and create nothing.
func TestReadersNeedAnExistingCatalog(t *testing.T) {
	for _, cmd := range []struct {
		name string
		run  func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error
	}{
		{"tables", func(ctx context.Context, a []string, o, e *bytes.Buffer) error { return runTables(ctx, a, o, e) }},
		{"scan", func(ctx context.Context, a []string, o, e *bytes.Buffer) error {
			return runScan(ctx, append(a, "--table", "users"), o, e)
		}},
	} {
		t.Run(cmd.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "typo")
			var out, errb bytes.Buffer
			err := cmd.run(t.Context(), []string{"--data-dir", dir}, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), "no catalog at "+filepath.Join(dir, "catalog.db")) {
				t.Fatalf("%s on a missing data dir: %v, want \"no catalog at ...\"", cmd.name, err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("%s created %s", cmd.name, dir)
			}
		})
	}
}

// TestCatalogFlagErrors checks that catalog flag mistakes name the flags.
func TestCatalogFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--catalog", "rest"}, "--catalog rest needs --catalog-uri"},
		{[]string{"--catalog-uri", "mysql://x"}, `--catalog-uri "mysql://x"`},
		{[]string{"--catalog", "hive"}, `--catalog "hive"`},
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
