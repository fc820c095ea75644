package iceberg

import (
	"context"
	"database/sql"
	"fmt"

	sqlcat "github.com/apache/iceberg-go/catalog/sql"
)

// catalogInitLockKey is the PostgreSQL advisory lock that serializes the
// SQL catalog's start-up among processes. iceberg-go's NewCatalog creates
// its tables with CREATE TABLE IF NOT EXISTS, which PostgreSQL does not make
// safe against itself: instances starting together on a fresh database
// (a StatefulSet, a test) fail with a unique violation on pg_type. The key
// is apart from the lease table's (internal/coord) and the maintenance
// locks' (hashed table names).
const catalogInitLockKey = 746164

// lockCatalogInit takes the start-up lock on a connection of its own (a
// session lock: NewCatalog runs on other connections of the pool) and
// returns its release. Only PostgreSQL needs it; SQLite's writers are
// serialized by the file.
func lockCatalogInit(ctx context.Context, db *sql.DB, dialect string) (unlock func(), err error) {
	if dialect != string(sqlcat.Postgres) {
		return func() {}, nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("start-up lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, catalogInitLockKey); err != nil {
		discardConn(conn)
		return nil, fmt.Errorf("start-up lock: %w", err)
	}
	return func() {
		// Closing the session releases the lock whatever happens to the
		// unlock statement.
		discardConn(conn)
	}, nil
}
