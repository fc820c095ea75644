package iceberg

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// The fence of a PostgreSQL SQL catalog (docs/scale-out.md): iceberg-go's
// SQL catalog commits a table with a conditional UPDATE of iceberg_tables
// inside a transaction it begins with the commit's context. Its connections
// come from fencedConnector, whose BeginTx, when the context carries fencing
// claims, first reads the claimed sources' lease rows FOR SHARE and aborts
// unless every claim holds. The check and the catalog's write are thus one
// PostgreSQL transaction: a successor's lease update either commits before
// the check (the commit is refused) or waits for the commit to end (the
// successor then reads the committed state). No timing is involved.

// fencedConnector wraps pgx's database/sql connector.
type fencedConnector struct {
	driver.Connector
}

// newFencedConnector parses a PostgreSQL DSN. idleTx > 0 makes PostgreSQL end
// a transaction left idle that long (a paused process holding lease rows
// FOR SHARE would otherwise block takeovers for as long as it is paused).
func newFencedConnector(dsn string, idleTx time.Duration) (driver.Connector, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("iceberg: catalog DSN: %w", err)
	}
	if idleTx > 0 {
		if cfg.RuntimeParams == nil {
			cfg.RuntimeParams = map[string]string{}
		}
		cfg.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(max(idleTx.Milliseconds(), 1), 10)
	}
	return fencedConnector{stdlib.GetConnector(*cfg)}, nil
}

func (c fencedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		_ = conn.Close()
		return nil, fmt.Errorf("iceberg: pgx connector returned %T", conn)
	}
	return &fencedConn{Conn: sc}, nil
}

// fencedConn is a pgx connection whose transactions check the fencing claims
// of their context. Every other method is pgx's.
type fencedConn struct {
	*stdlib.Conn
}

const leaseCheckSQL = `SELECT source_id, owner, epoch FROM ` + fence.LeaseTable + ` WHERE source_id = ANY($1) FOR SHARE`

func (c *fencedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	// Read-only transactions (the catalog's loads) change nothing.
	if opts.ReadOnly {
		return tx, nil
	}
	if claims, ok := fence.From(ctx); ok {
		if err := checkClaims(ctx, c.Conn.Conn(), claims); err != nil {
			return nil, errorsJoinRollback(err, tx)
		}
	}
	// An elected committer's commit of published parts (committer.go).
	if pc, ok := ctx.Value(partsCommitKey{}).(*partsCommit); ok {
		if err := pc.apply(ctx, c.Conn.Conn()); err != nil {
			return nil, errorsJoinRollback(err, tx)
		}
	}
	// An elected committer's mirror commit of published parts
	// (committermirror.go).
	if ma, ok := ctx.Value(mirrorApplyKey{}).(*mirrorApply); ok {
		if err := ma.apply(ctx, c.Conn.Conn()); err != nil {
			return nil, errorsJoinRollback(err, tx)
		}
	}
	return tx, nil
}

func errorsJoinRollback(err error, tx driver.Tx) error {
	if rerr := tx.Rollback(); rerr != nil {
		return fmt.Errorf("%w (rollback: %v)", err, rerr)
	}
	return err
}

// checkClaims reads the claimed lease rows, locking them FOR SHARE until the
// transaction ends, and checks the claims.
func checkClaims(ctx context.Context, conn *pgx.Conn, c fence.Claims) error {
	ids := make([]string, 0, len(c.Claims))
	for _, cl := range c.Claims {
		ids = append(ids, cl.Source)
	}
	got, err := readLeases(ctx, conn, leaseCheckSQL, ids)
	if err != nil {
		return fmt.Errorf("iceberg: fence check: %w", err)
	}
	return fence.Check(c, got)
}

// leaseReadSQL reads the lease rows of the sources $1 without locking
// them: a check whose answer the commit's own transaction checks again.
const leaseReadSQL = `SELECT source_id, owner, epoch FROM ` + fence.LeaseTable + ` WHERE source_id = ANY($1)`

// withCatalogConn runs fn on one of the catalog's PostgreSQL connections.
func (s *Sink) withCatalogConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := s.partsDB().Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		fc, ok := dc.(*fencedConn)
		if !ok {
			return fmt.Errorf("iceberg: catalog connection is %T", dc)
		}
		return fn(fc.Conn.Conn())
	})
}

// querier is what readLeases needs of a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readLeases runs query (a SELECT source_id, owner, epoch of the lease
// table for the sources ids, which may lock the rows) and returns the
// leases by source.
func readLeases(ctx context.Context, q querier, query string, ids []string) (map[string]fence.Lease, error) {
	rows, err := q.Query(ctx, query, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := make(map[string]fence.Lease, len(ids))
	for rows.Next() {
		var (
			id    string
			l     fence.Lease
			epoch int64
		)
		if err := rows.Scan(&id, &l.Owner, &epoch); err != nil {
			return nil, err
		}
		l.Epoch = uint64(epoch)
		got[id] = l
	}
	return got, rows.Err()
}
