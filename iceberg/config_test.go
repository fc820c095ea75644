package iceberg

import (
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	cases := []struct {
		name                    string
		cfg                     Config
		wantErr                 string
		driver, dialect, dsnHas string
		warehouse               string
	}{
		{name: "embedded", cfg: Config{DataDir: "/data"}, driver: "sqlite", dialect: "sqlite", dsnHas: "file:/data/catalog.db?", warehouse: "file:///data/warehouse"},
		{name: "postgres", cfg: Config{CatalogURI: "postgres://u:p@db:5432/cat", Warehouse: "s3://b/w"}, driver: "pgx", dialect: "postgres", dsnHas: "postgres://u:p@db:5432/cat", warehouse: "s3://b/w"},
		{name: "sqlite path", cfg: Config{CatalogURI: "/var/cat.db", DataDir: "/d"}, driver: "sqlite", dialect: "sqlite", dsnHas: "file:/var/cat.db?_pragma", warehouse: "file:///d/warehouse"},
		{name: "custom driver", cfg: Config{CatalogURI: "user@/db", SQLDriver: "mysql", SQLDialect: "mysql", Warehouse: "mem://w"}, driver: "mysql", dialect: "mysql", dsnHas: "user@/db", warehouse: "mem://w"},
		{name: "no data dir", cfg: Config{}, wantErr: "DataDir is required"},
		{name: "bad type", cfg: Config{CatalogType: "hive", DataDir: "/d"}, wantErr: "unknown catalog type"},
		{name: "rest", cfg: Config{CatalogType: "REST", CatalogURI: "http://localhost:8181"}, warehouse: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.cfg.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Namespace != "cdc" || cfg.TargetFileSizeBytes != 128<<20 || cfg.CatalogName != "lakehouse" || cfg.Logger == nil {
				t.Errorf("defaults %+v", cfg)
			}
			if cfg.Warehouse != tc.warehouse {
				t.Errorf("warehouse %q, want %q", cfg.Warehouse, tc.warehouse)
			}
			if cfg.CatalogType != CatalogSQL {
				return
			}
			driver, dialect, dsn, err := sqlTarget(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			if driver != tc.driver || dialect != tc.dialect || !strings.Contains(dsn, tc.dsnHas) {
				t.Errorf("sql target %s %s %s", driver, dialect, dsn)
			}
		})
	}
}
