// Package coord keeps the leases that give each source one writer across
// instances: a row per source in the catalog's PostgreSQL database, with the
// owning instance, its address, an epoch (the fencing token, raised when
// another instance takes the source) and an expiry. See docs/scale-out.md.
//
// Only the database's clock is used for expiry: instances never compare
// their own clocks with it.
package coord

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/dot-do/lakehouse-rpc/internal/fence"
)

// Defaults of Options.
const (
	DefaultLeaseTTL    = 10 * time.Second
	DefaultLockTimeout = 2 * time.Second
	DefaultOrphanWait  = 10 * time.Minute
)

// Options configure a Store.
type Options struct {
	// DSN is the PostgreSQL DSN of the SQL catalog's database: the fence
	// is checked in the catalog's own transactions, so the leases must be
	// in the same database.
	DSN string
	// Owner is this instance's id (stable across restarts on one data
	// directory). Required.
	Owner string
	// Addr is the address clients reach this instance at, told to clients
	// that connect to another instance while this one owns their source.
	Addr string
	// TTL is how long a lease lasts without renewal. Default DefaultLeaseTTL.
	TTL time.Duration
	// LockTimeout bounds how long an acquire waits for a lease row locked
	// by a commit in progress. Default DefaultLockTimeout.
	LockTimeout time.Duration
	// OrphanWait is how long an expired lease stays with its dead owner
	// when the connecting client had batches acked by that owner that are
	// not committed and that it cannot resend (see Resume): they are in the
	// owner's write-ahead log only, and taking the source would make them
	// impossible to commit. After it, the source moves and those batches
	// are lost. Zero: never wait. Open does not default it.
	OrphanWait time.Duration
}

// Resume is what a connecting client says it holds (ConnectRequest's
// last_ack_sequence and resend_from_sequence).
type Resume struct {
	// LastAcked is the highest batch the client saw acknowledged.
	LastAcked uint64
	// ResendFrom is the lowest batch the client still holds and can send
	// again; 0 when it holds none it has seen acknowledged.
	ResendFrom uint64
	// LastAckedEntry is the highest entry sequence the client saw
	// acknowledged: entry-mode sources (legacy children, through the
	// bridge) are numbered by the server, so their batch numbers say
	// nothing; the committed entry mark must cover this instead.
	LastAckedEntry uint64
}

// Store is the lease table.
type Store struct {
	db   *sql.DB
	opts Options
}

// Lease is a lease this instance holds.
type Lease struct {
	Epoch uint64
	// Committed is the source's committed mark (every table holds its
	// batches up to it); HasCommitted is false when no owner recorded one.
	CommittedSeq, CommittedEntry uint64
	HasCommitted                 bool
	// Ranges are the entry sequences committed recently (ranges.go), by
	// this or earlier owners; NowMs is the database's clock when they were
	// read, to judge their age.
	Ranges []EntryRange
	NowMs  int64
}

// HeldError is an acquire refused because another live instance holds the
// lease.
type HeldError struct {
	Source, Owner, Addr string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("source %q is owned by instance %s at %q", e.Source, e.Owner, e.Addr)
}

// OrphanError is an acquire refused because the lease's owner is gone
// (expired) while holding batches the client was acked and cannot resend:
// they are committed when the owner comes back on its data directory (or
// `lakehouse replay` of it runs), or given up at Until.
type OrphanError struct {
	Source, Owner             string
	Committed, CommittedEntry uint64    // the lease's committed marks
	Resume                              // what the client was acked
	Until                     time.Time // when the source moves anyway (database clock)
}

func (e *OrphanError) Error() string {
	what := fmt.Sprintf("batches %d..%d", e.Committed+1, e.LastAcked)
	if e.LastAcked <= e.Committed {
		what = fmt.Sprintf("entries %d..%d", e.CommittedEntry+1, e.LastAckedEntry)
	}
	return fmt.Sprintf("source %q: %s were acked by instance %s, which is gone, and are not committed; they are in its write-ahead log: waiting for it to restart (or for lakehouse replay of its data directory) until %s",
		e.Source, what, e.Owner, e.Until.UTC().Format(time.RFC3339))
}

// Mark is a committed mark of a source, under the epoch its batches were
// committed with.
type Mark struct {
	Source     string
	Epoch      uint64
	Seq, Entry uint64
	// Ranges are the entry sequences the commits behind the mark wrote,
	// for an entry-mode source (none for a batch-mode one); see ranges.go.
	Ranges []EntryRange
}

// Open connects and creates the lease table if needed.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.DSN == "" {
		return nil, errors.New("coord: Options.DSN is required")
	}
	if o.Owner == "" {
		return nil, errors.New("coord: Options.Owner is required")
	}
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	db, err := sql.Open("pgx", o.DSN)
	if err != nil {
		return nil, fmt.Errorf("coord: %w", err)
	}
	s := &Store{db: db, opts: o}
	if err := s.createTable(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Owner is this instance's id.
func (s *Store) Owner() string { return s.opts.Owner }

// TTL is the lease duration.
func (s *Store) TTL() time.Duration { return s.opts.TTL }

// Close closes the database handle.
func (s *Store) Close() error { return s.db.Close() }

// createTable creates the table under an advisory lock: concurrent CREATE
// TABLE IF NOT EXISTS of several starting instances can otherwise fail.
func (s *Store) createTable(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("coord: create lease table: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(746163)`); err != nil {
		return fmt.Errorf("coord: create lease table: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+fence.LeaseTable+` (
		source_id text PRIMARY KEY,
		owner text NOT NULL,
		addr text NOT NULL DEFAULT '',
		epoch bigint NOT NULL,
		expires_at timestamptz NOT NULL,
		committed_seq bigint,
		committed_entry bigint)`); err != nil {
		return fmt.Errorf("coord: create lease table: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(rangesColumnSQL, fence.LeaseTable)); err != nil {
		return fmt.Errorf("coord: create lease table: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("coord: create lease table: %w", err)
	}
	return nil
}

func (s *Store) ttlSecs() float64 { return s.opts.TTL.Seconds() }

// acquireSQL takes the lease if it is free, this instance's, or expired;
// an expired lease moves only if the client can supply every batch above
// its committed mark ($6 last acked batch and $9 last acked entry at or
// below the marks, or $7 resend-from at or below the mark + 1), or the owner
// has been gone OrphanWait ($8), or the wait is off ($5).
const acquireSQL = `INSERT INTO ` + fence.LeaseTable + ` AS l (source_id, owner, addr, epoch, expires_at)
VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4))
ON CONFLICT (source_id) DO UPDATE SET
	epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE l.epoch + 1 END,
	owner = EXCLUDED.owner, addr = EXCLUDED.addr, expires_at = EXCLUDED.expires_at
WHERE l.owner = EXCLUDED.owner OR (l.expires_at < now() AND ($5
	OR (COALESCE(l.committed_seq, 0) >= $6 AND COALESCE(l.committed_entry, 0) >= $9)
	OR ($7 > 0 AND $7 <= COALESCE(l.committed_seq, 0) + 1)
	OR l.expires_at + make_interval(secs => $8) < now()))
RETURNING epoch, committed_seq, committed_entry, committed_ranges, (extract(epoch FROM now()) * 1000)::bigint`

const leaseStateSQL = `SELECT owner, addr, expires_at > now(), COALESCE(committed_seq, 0), COALESCE(committed_entry, 0),
	expires_at + make_interval(secs => $2) FROM ` + fence.LeaseTable + ` WHERE source_id = $1`

// Acquire takes source's lease: a free or expired lease is taken with its
// epoch raised; one this instance owns keeps its epoch (its batches under
// it stay committable). A lease another live instance holds is a
// *HeldError. An expired one whose owner acked batches the client cannot
// resend (r) stays with that owner for OrphanWait: an *OrphanError. It
// waits at most LockTimeout for a commit that holds the row.
func (s *Store) Acquire(ctx context.Context, source string, r Resume) (Lease, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Lease{}, fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, max(s.opts.LockTimeout.Milliseconds(), 1))); err != nil {
		return Lease{}, fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	var (
		l            Lease
		epoch        int64
		cseq, centry sql.NullInt64
		ranges       []byte
	)
	err = tx.QueryRowContext(ctx, acquireSQL, source, s.opts.Owner, s.opts.Addr, s.ttlSecs(),
		s.opts.OrphanWait <= 0, int64(r.LastAcked), int64(r.ResendFrom), s.opts.OrphanWait.Seconds(), int64(r.LastAckedEntry)).
		Scan(&epoch, &cseq, &centry, &ranges, &l.NowMs)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, s.refusal(ctx, tx, source, r)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	if err := tx.Commit(); err != nil {
		return Lease{}, fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	l.Epoch = uint64(epoch)
	l.CommittedSeq, l.CommittedEntry = uint64(cseq.Int64), uint64(centry.Int64)
	l.HasCommitted = cseq.Valid
	if l.Ranges, err = decodeRanges(ranges); err != nil {
		return Lease{}, fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	return l, nil
}

// refusal explains an acquire that took nothing: the lease is live
// elsewhere, or its dead owner holds batches the client cannot resend.
func (s *Store) refusal(ctx context.Context, tx *sql.Tx, source string, r Resume) error {
	var (
		owner, addr      string
		live             bool
		committed, entry int64
		until            time.Time
	)
	if err := tx.QueryRowContext(ctx, leaseStateSQL, source, s.opts.OrphanWait.Seconds()).
		Scan(&owner, &addr, &live, &committed, &entry, &until); err != nil {
		return fmt.Errorf("coord: acquire %q: %w", source, err)
	}
	if live {
		return &HeldError{Source: source, Owner: owner, Addr: addr}
	}
	return &OrphanError{Source: source, Owner: owner, Committed: uint64(committed), CommittedEntry: uint64(entry),
		Resume: r, Until: until}
}

// Reclaim renews source's lease if this instance still holds it at epoch
// (expired or not): an instance restarted on its data directory resumes the
// leases its logged batches were accepted under. False: the source moved.
func (s *Store) Reclaim(ctx context.Context, source string, epoch uint64) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE `+fence.LeaseTable+` SET expires_at = now() + make_interval(secs => $4), addr = $5
		WHERE source_id = $1 AND owner = $2 AND epoch = $3`, source, s.opts.Owner, int64(epoch), s.ttlSecs(), s.opts.Addr)
	if err != nil {
		return false, fmt.Errorf("coord: reclaim %q: %w", source, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Renew extends the leases held (source -> epoch) and returns those no
// longer held.
func (s *Store) Renew(ctx context.Context, held map[string]uint64) (lost []string, err error) {
	if len(held) == 0 {
		return nil, nil
	}
	ids, epochs := split(held)
	rows, err := s.db.QueryContext(ctx, `UPDATE `+fence.LeaseTable+` AS l SET expires_at = now() + make_interval(secs => $4)
		FROM unnest($2::text[], $3::bigint[]) AS h(source_id, epoch)
		WHERE l.source_id = h.source_id AND l.epoch = h.epoch AND l.owner = $1
		RETURNING l.source_id`, s.opts.Owner, ids, epochs, s.ttlSecs())
	if err != nil {
		return nil, fmt.Errorf("coord: renew: %w", err)
	}
	renewed, err := scanIDs(rows)
	if err != nil {
		return nil, fmt.Errorf("coord: renew: %w", err)
	}
	for id := range held {
		if !renewed[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// Release ends a lease at once, so that another instance can take the
// source without waiting for it to expire. The row keeps its owner and
// epoch: if this instance acquires it again before anyone else, the epoch
// is unchanged.
func (s *Store) Release(ctx context.Context, source string, epoch uint64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE `+fence.LeaseTable+` SET expires_at = now()
		WHERE source_id = $1 AND owner = $2 AND epoch = $3`, source, s.opts.Owner, int64(epoch))
	if err != nil {
		return fmt.Errorf("coord: release %q: %w", source, err)
	}
	return nil
}

// MarkCommitted raises the committed marks of sources this instance holds at
// the marks' epochs, adds their committed entry ranges to those the rows
// hold (kept within keep), and returns the sources whose mark was recorded.
// One statement for every mark.
func (s *Store) MarkCommitted(ctx context.Context, marks []Mark, keep Window) (map[string]bool, error) {
	if len(marks) == 0 {
		return nil, nil
	}
	ids, ranges := make([]string, len(marks)), make([]string, len(marks))
	epochs, seqs, entries := make([]int64, len(marks)), make([]int64, len(marks)), make([]int64, len(marks))
	los, his := make([]int64, len(marks)), make([]int64, len(marks))
	for i, m := range marks {
		ids[i], epochs[i], seqs[i], entries[i] = m.Source, int64(m.Epoch), int64(m.Seq), int64(m.Entry)
		ranges[i], los[i], his[i] = encodeRanges(m.Ranges)
	}
	rows, err := s.db.QueryContext(ctx, `UPDATE `+fence.LeaseTable+` AS l SET
			committed_seq = GREATEST(COALESCE(l.committed_seq, 0), m.seq),
			committed_entry = GREATEST(COALESCE(l.committed_entry, 0), m.entry),
			committed_ranges = `+mergeRangesSQL+`
		FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $8::text[], $9::bigint[], $10::bigint[])
				AS m(source_id, epoch, seq, entry, ranges, lo, hi),
			(SELECT (extract(epoch FROM now()) * 1000)::bigint) AS c(now_ms)
		WHERE l.source_id = m.source_id AND l.epoch = m.epoch AND l.owner = $1
		RETURNING l.source_id`, s.opts.Owner, ids, epochs, seqs, entries, keep.Age.Milliseconds(), int64(keep.Entries), ranges, los, his, int64(MaxRanges))
	if err != nil {
		return nil, fmt.Errorf("coord: mark committed: %w", err)
	}
	ok, err := scanIDs(rows)
	if err != nil {
		return nil, fmt.Errorf("coord: mark committed: %w", err)
	}
	return ok, nil
}

func split(held map[string]uint64) ([]string, []int64) {
	ids, epochs := make([]string, 0, len(held)), make([]int64, 0, len(held))
	for id, e := range held {
		ids, epochs = append(ids, id), append(epochs, int64(e))
	}
	return ids, epochs
}

func scanIDs(rows *sql.Rows) (map[string]bool, error) {
	defer rows.Close()
	out := make(map[string]bool)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}
