package main

import (
	"flag"
	"os"
	"testing"
)

type flagT = flag.Flag

// TestGeneratedConfigDocs fails when docs/configuration.md or
// lakehouse.example.yaml no longer match the flag definitions. Regenerate
// with LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs.
func TestGeneratedConfigDocs(t *testing.T) {
	for path, want := range map[string]string{
		"../../docs/configuration.md":  configReference(),
		"../../lakehouse.example.yaml": exampleConfig(),
	} {
		if os.Getenv("LAKEHOUSE_UPDATE_DOCS") != "" {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s is stale: regenerate it with LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs", path)
		}
	}
}
