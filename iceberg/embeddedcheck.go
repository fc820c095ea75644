package iceberg

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// The embedded catalog (SQLite in the data directory) records each table's
// location as an absolute path. A copy of a data directory at another path
// therefore still points at the original's warehouse: a server or
// `lakehouse maintain` on the copy would write into the original's tables,
// and its snapshot expiry and orphan cleanup would delete files the
// original still references. checkEmbeddedLocations refuses to open such a
// catalog. (A shared catalog, PostgreSQL or REST, is meant to be shared:
// it is not checked.)

// checkEmbeddedLocations returns an error naming the first table of the
// embedded catalog whose metadata is outside cfg.Warehouse.
func checkEmbeddedLocations(ctx context.Context, cfg *Config, db *sql.DB) error {
	if cfg.CatalogType != CatalogSQL || cfg.CatalogURI != "" {
		return nil
	}
	warehouse, ok := localDir(cfg.Warehouse)
	if !ok {
		return nil // an object store: its paths do not move with the directory
	}
	warehouse = resolveExisting(warehouse)
	rows, err := db.QueryContext(ctx,
		"SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ? AND metadata_location IS NOT NULL",
		cfg.CatalogName)
	if err != nil {
		return fmt.Errorf("iceberg: list the embedded catalog's tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ns, name, loc string
		if err := rows.Scan(&ns, &name, &loc); err != nil {
			return fmt.Errorf("iceberg: list the embedded catalog's tables: %w", err)
		}
		dir, ok := localDir(loc)
		if ok && pathWithin(resolveExisting(dir), warehouse) {
			continue
		}
		if i := strings.LastIndex(loc, "/metadata/"); i > 0 {
			loc = loc[:i] // the table's location
		}
		return fmt.Errorf("iceberg: the embedded catalog %s has table %s.%s at %s, outside the warehouse %s. "+
			"It records absolute paths: this data directory looks like a copy of one at another path, and running on it would change the original's tables. "+
			"Run on the original (to move a data directory, keep its path); if this catalog ran with another --warehouse, pass that one",
			filepath.Join(cfg.DataDir, "catalog.db"), ns, name, loc, cfg.Warehouse)
	}
	return rows.Err()
}

// localDir returns the local path of a file:// URL or an absolute path, and
// false for any other location.
func localDir(loc string) (string, bool) {
	if filepath.IsAbs(loc) {
		return filepath.Clean(loc), true
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "file" {
		return "", false
	}
	return filepath.Clean(filepath.FromSlash(u.Path)), true
}

// resolveExisting resolves the symbolic links of the longest existing
// prefix of path, so that a data directory reached through a link still
// holds its tables.
func resolveExisting(path string) string {
	rest := ""
	for p := path; ; {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// pathWithin reports whether path is dir or below it (both cleaned).
func pathWithin(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(os.PathSeparator))
}
