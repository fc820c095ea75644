// Package pgtest gives tests a fresh PostgreSQL database on the server named
// by LAKEHOUSE_TEST_POSTGRES_DSN (CI starts one), or skips them.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// EnvDSN names the variable holding the test server's DSN.
const EnvDSN = "LAKEHOUSE_TEST_POSTGRES_DSN"

// FreshDB creates a database of its own for t, dropped when t ends, and
// returns its DSN. Without EnvDSN set it skips t.
func FreshDB(t testing.TB, dsn string) string {
	t.Helper()
	if dsn == "" {
		t.Skipf("%s not set: this test needs a PostgreSQL server (CI starts one)", EnvDSN)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "lh_test_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", dsn)
		if err != nil {
			return
		}
		defer a.Close()
		_, _ = a.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u.Path = "/" + name
	return u.String()
}
