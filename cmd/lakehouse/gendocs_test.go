package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

type flagT = flag.Flag

// TestGeneratedConfigDocs fails when docs/configuration.md or
// lakehouse.example.yaml no longer match the flag definitions. Regenerate
// with LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs.
func TestGeneratedConfigDocs(t *testing.T) {
	for path, want := range map[string]string{
		"../../docs/configuration.md":  configReference(),
		"../../lakehouse.example.yaml": exampleConfig(),
		"../../docs/limits.md":         limitsReference(),
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

// TestReadingDocsMatchDemo: docs/reading-tables.md uses the catalog name,
// namespace and engine settings that lakehouse demo prints.
func TestReadingDocsMatchDemo(t *testing.T) {
	doc, err := os.ReadFile("../../docs/reading-tables.md")
	if err != nil {
		t.Fatal(err)
	}
	d := strings.ReplaceAll(string(doc), "/srv/lakehouse", "DIR")
	snip := readSnippets("DIR", "users", "")
	for _, line := range strings.Split(snip, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "--packages") || strings.HasPrefix(line, "--conf") || strings.HasPrefix(line, "-e ") {
			if !strings.Contains(d, line) {
				t.Errorf("docs/reading-tables.md lacks the demo's Spark setting %q", line)
			}
		}
	}
	for _, want := range []string{
		`"` + iceberg.DefaultCatalogName + `",`, "catalog_name='" + iceberg.DefaultCatalogName + "'",
		"table_namespace='" + iceberg.DefaultNamespace + "'", `uri="sqlite:///DIR/catalog.db"`,
		`warehouse="file://DIR/warehouse"`, "iceberg.jdbc-catalog.catalog-name=" + iceberg.DefaultCatalogName,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("docs/reading-tables.md lacks %q", want)
		}
	}
}
