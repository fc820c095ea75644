package iceberg

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// Maintenance on exactly one instance per table (docs/scale-out.md): with
// Config.ExclusiveMaintenance, a table's maintenance pass runs under a
// PostgreSQL session advisory lock keyed by the table, taken with
// pg_try_advisory_lock on a connection of the catalog's database held for
// the whole pass. An instance that finds the lock taken skips the table: the
// holder is maintaining it now. The lock is the session's, so it ends with
// the connection if the holder dies or its connection breaks.

// maintLockPrefix keeps the maintenance locks' keys apart from other uses of
// advisory locks in the catalog's database.
const maintLockPrefix = "lakehouse-maintenance:"

// maintLockKey is the advisory lock key of a table's maintenance.
func (s *Sink) maintLockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(maintLockPrefix + strings.Join(s.ns, ".") + "." + sink.SanitizeName(name)))
	return int64(h.Sum64())
}

// errMaintLockHeld is a table another instance is maintaining.
var errMaintLockHeld = errors.New("another instance is maintaining the table")

// lockTableMaintenance takes the table's maintenance lock. It returns
// errMaintLockHeld when another session holds it, and a release function
// otherwise (a no-op unless ExclusiveMaintenance).
func (s *Sink) lockTableMaintenance(ctx context.Context, name string) (release func(), err error) {
	if !s.cfg.ExclusiveMaintenance {
		return func() {}, nil
	}
	oc, ok := s.cat.(*ownedDBCatalog)
	if !ok {
		return nil, errors.New("iceberg: exclusive maintenance needs the SQL catalog on PostgreSQL")
	}
	key := s.maintLockKey(name)
	conn, err := oc.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("iceberg: maintenance lock: %w", err)
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		discardConn(conn)
		return nil, fmt.Errorf("iceberg: maintenance lock: %w", err)
	}
	if !got {
		_ = conn.Close()
		return nil, errMaintLockHeld
	}
	return func() {
		// Unlock with a context of its own: the pass's may have ended.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Maintenance.Timeout)
		defer cancel()
		var ok bool
		if err := conn.QueryRowContext(uctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
			// Never return a connection that may still hold the lock to
			// the pool: closing the session releases it.
			s.log.Warn("maintenance lock: unlock failed; closing its connection", "table", name, "err", err)
			discardConn(conn)
			return
		}
		_ = conn.Close()
	}, nil
}

// discardConn closes conn's underlying connection instead of returning it
// to the pool.
func discardConn(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}
