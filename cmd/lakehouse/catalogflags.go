package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// checkCatalog checks the catalog flags against each other, so that a
// mistake names the flag to fix rather than a field of the sink's Config.
func (f *sinkFlags) checkCatalog() error {
	switch strings.ToLower(f.catalog) {
	case "sql":
		scheme, _, hasScheme := strings.Cut(f.catalogURI, "://")
		if hasScheme && scheme != "postgres" && scheme != "postgresql" && scheme != "file" {
			return fmt.Errorf("--catalog-uri %q: --catalog sql takes a postgres:// DSN or a SQLite file path (%s is not supported)", f.catalogURI, scheme)
		}
	case "rest":
		if f.catalogURI == "" {
			return errors.New("--catalog rest needs --catalog-uri, the REST catalog's endpoint (for example http://127.0.0.1:8181)")
		}
		if !strings.HasPrefix(f.catalogURI, "http://") && !strings.HasPrefix(f.catalogURI, "https://") {
			return fmt.Errorf("--catalog-uri %q: --catalog rest takes an http:// or https:// endpoint", f.catalogURI)
		}
	case "glue":
	default:
		return fmt.Errorf("--catalog %q: want sql, rest or glue", f.catalog)
	}
	return nil
}

// requireCatalog fails unless the embedded SQLite catalog that readers are
// about to open exists: opening it would create an empty catalog (and data
// directory) at a mistyped path and report "no tables".
func (f *sinkFlags) requireCatalog(dataDir string) error {
	if strings.ToLower(f.catalog) != "sql" {
		return nil
	}
	path := f.catalogURI
	switch {
	case path == "":
		path = filepath.Join(dataDir, "catalog.db")
	case strings.Contains(path, "://"):
		return nil // PostgreSQL: nothing is created by opening it
	default:
		path, _, _ = strings.Cut(strings.TrimPrefix(path, "file:"), "?")
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no catalog at %s: is --data-dir the server's data directory? (--data-dir %s)", path, dataDir)
		}
		return fmt.Errorf("catalog %s: %w", path, err)
	}
	return nil
}
