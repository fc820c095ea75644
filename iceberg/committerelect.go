package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
	"github.com/dot-do/lakehouse-rpc/internal/proflabel"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// The elected committer (Config.ElectedCommitter, docs/scale-out.md): a
// few times a second, each instance looks for tables with published parts
// still staged. A table's committer is the instance whose session holds the
// table's PostgreSQL advisory lock (pg_try_advisory_lock on a connection
// kept for it): the role is sticky, and it ends with the session if the
// holder dies. The holder commits every staged part of the table in one
// snapshot, at most once per commit slot (internal/commitslot: the
// interval's multiples of Unix time), a gather delay into the slot: the
// instances' scheduled flushes are at the slots' starts, so their parts of
// a slot share its snapshot and their stagers wait about the gather delay.
// A part published at another time (a manual flush, a shutdown, a log
// filling) is committed at the next poll if its table has no snapshot in
// the slot yet, at the next slot's commit otherwise. Safety does not rest
// on the lock: a part is marked committed in the catalog commit's own
// transaction, only if still staged (committertx.go), so two committers can
// never both commit it.

// committerLockPrefix keeps the committer locks' keys apart from the
// maintenance locks'.
const committerLockPrefix = "lakehouse-committer:"

// committerState is the elected committer's state.
type committerState struct {
	// cancel ends the loop's context (Close); done and kaDone are closed
	// when the loop and the keep-alive have returned.
	cancel       context.CancelFunc
	done, kaDone chan struct{}

	mu sync.Mutex // guards conn and held (the loop and Close)
	// conn holds this instance's committer locks; nil before the first.
	conn *sql.Conn
	// held: tables whose lock conn holds.
	held map[string]bool

	lastCleanup time.Time
	// snapMu guards lastSnap: a round's tables commit in parallel.
	snapMu sync.Mutex
	// lastSnap holds, per table, the time of its last snapshot this
	// instance made or saw.
	lastSnap map[string]time.Time
	// mirrorRetryAt holds, per table whose pending mirror failed, when to
	// try it again outside a changelog commit (the loop's goroutine only).
	mirrorRetryAt map[string]time.Time

	commits, partsCommitted, partsFenced atomic.Int64
	waitSeconds                          prometheus.Histogram
}

// lastSnapOf returns the time of the table's last snapshot this instance
// made or saw.
func (c *committerState) lastSnapOf(name string) time.Time {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	return c.lastSnap[name]
}

// sawSnap records a snapshot of the table made at, when newer than the last.
func (c *committerState) sawSnap(name string, at time.Time) {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	if at.After(c.lastSnap[name]) {
		c.lastSnap[name] = at
	}
}

func newCommitterState() committerState {
	return committerState{
		held:          make(map[string]bool),
		lastSnap:      make(map[string]time.Time),
		mirrorRetryAt: make(map[string]time.Time),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lakehouse_committer_wait_seconds",
			Help:    "Time a commit of this instance's staged parts waited for the elected committers to commit them (multi-instance mode).",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
	}
}

// CommitterTotals are the elected committer's counters.
type CommitterTotals struct {
	Commits, PartsCommitted, PartsFenced int64
}

// CommitterTotals returns the elected committer's counters.
func (s *Sink) CommitterTotals() CommitterTotals {
	return CommitterTotals{Commits: s.committer.commits.Load(), PartsCommitted: s.committer.partsCommitted.Load(),
		PartsFenced: s.committer.partsFenced.Load()}
}

// startCommitter creates the parts table, abandons this instance's parts
// of a previous run, and starts the committer loop.
func (s *Sink) startCommitter(ctx context.Context) error {
	db := s.partsDB()
	if err := s.createPartsTable(ctx, db); err != nil {
		return err
	}
	if err := s.abandonParts(ctx, db); err != nil {
		return err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s.committer.cancel = cancel
	s.committer.done = make(chan struct{})
	s.committer.kaDone = make(chan struct{})
	go s.runCommitter(loopCtx)
	go s.keepCommitterSession(loopCtx)
	return nil
}

// partsDB is the catalog's database (ElectedCommitter needs the SQL catalog
// on PostgreSQL, checked by Config).
func (s *Sink) partsDB() *sql.DB { return s.cat.(*ownedDBCatalog).db }

// stopCommitter ends the loop and closes the locks' session (which ends
// the roles at once, for the next instance to take).
func (s *Sink) stopCommitter() {
	if s.committer.cancel == nil {
		return
	}
	s.committer.cancel()
	<-s.committer.done
	<-s.committer.kaDone
	s.committer.mu.Lock()
	defer s.committer.mu.Unlock()
	if s.committer.conn != nil {
		discardConn(s.committer.conn)
		s.committer.conn = nil
	}
	clear(s.committer.held)
}

func (s *Sink) runCommitter(loopCtx context.Context) {
	defer close(s.committer.done)
	proflabel.Set(loopCtx, proflabel.Commit)
	t := time.NewTicker(committerPoll(s.cfg.CommitterInterval))
	defer t.Stop()
	for {
		select {
		case <-loopCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(loopCtx, max(2*s.cfg.CommitterInterval, time.Minute))
		if err := s.committerRound(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("elected committer round failed", "err", err)
		}
		cancel()
	}
}

// keepCommitterSession keeps the locks' session busy more often than its
// idle_session_timeout (Config.FenceIdleTxTimeout, the lease TTL; see
// takeCommitter), on a goroutine of its own so that a long commit round
// does not let it lapse. A paused process (SIGSTOP) stops pinging, and
// PostgreSQL ends its session after the timeout: its roles go to the other
// instances instead of stalling every table it held.
func (s *Sink) keepCommitterSession(ctx context.Context) {
	defer close(s.committer.kaDone)
	if s.cfg.FenceIdleTxTimeout <= 0 {
		return
	}
	t := time.NewTicker(s.cfg.FenceIdleTxTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := &s.committer
		c.mu.Lock()
		if c.conn != nil {
			pctx, cancel := context.WithTimeout(ctx, s.cfg.FenceIdleTxTimeout/3)
			if err := c.conn.PingContext(pctx); err != nil && ctx.Err() == nil {
				s.log.Warn("elected committer: the locks' session broke; the roles are lost", "err", err)
				discardConn(c.conn)
				c.conn = nil
				clear(c.held)
			}
			cancel()
		}
		c.mu.Unlock()
	}
}

// committerRound commits, for each table with staged parts whose committer
// role this instance holds or takes, all its staged parts.
func (s *Sink) committerRound(ctx context.Context) error {
	db := s.partsDB()
	tables, err := stagedTables(ctx, db, s.cfg.Namespace)
	if err != nil {
		return err
	}
	type job struct {
		name                  string
		due, urgent           bool
		rows                  int64 // staged rows
		changelogErr, mirrErr error
	}
	var (
		errs []error
		jobs []*job
		now  = time.Now()
	)
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		w := tables[name]
		due := w.staged && s.commitDue(name, now, w.urgent)
		// A pending mirror (a committer that stopped between a table's
		// changelog commit and its mirror's) is applied at once, and
		// after a failure at most every mirrorRetryDelay: not at every
		// poll, against a store that fails.
		if !due && (!w.mirrorPending || now.Before(s.committer.mirrorRetryAt[name])) {
			continue
		}
		held, err := s.takeCommitter(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if held {
			jobs = append(jobs, &job{name: name, due: due, urgent: w.urgent, rows: w.stagedRows})
		}
	}
	// The tables held commit in parallel, as a direct commit's do
	// (commitparallel.go): each its changelog, then its mirror, the
	// smallest first (a small table waits for no large one).
	rows := make([]int64, len(jobs))
	for i, j := range jobs {
		rows[i] = j.rows
	}
	order := fewestFirst(rows)
	if len(jobs) > 0 {
		// A round with nothing to commit (most of the polls, ten a
		// second) is no pass: the mirror compaction would yield to it,
		// and a compaction started during the poll stop, for nothing.
		s.passes.start()
		defer s.passes.end()
	}
	inParallel(s.cfg.CommitParallelism, len(jobs), func(k int) {
		j := jobs[order[k]]
		if j.due {
			if j.changelogErr = s.commitPublished(ctx, j.name, j.urgent); j.changelogErr != nil {
				return
			}
		}
		// Right after the changelog's commit: the parts it committed
		// wait for their mirror.
		j.mirrErr = s.commitPublishedMirror(ctx, j.name)
	})
	for _, j := range jobs { // in name order, as a direct commit's errors
		switch {
		case j.changelogErr != nil:
			errs = append(errs, fmt.Errorf("table %q: %w", j.name, j.changelogErr))
		case j.mirrErr != nil:
			s.committer.mirrorRetryAt[j.name] = time.Now().Add(mirrorRetryDelay)
			errs = append(errs, fmt.Errorf("table %q: mirror: %w", j.name, j.mirrErr))
		default:
			delete(s.committer.mirrorRetryAt, j.name)
		}
	}
	if time.Since(s.committer.lastCleanup) > partsKeep {
		s.committer.lastCleanup = time.Now()
		if _, err := db.ExecContext(ctx, `DELETE FROM `+PartsTable+` WHERE namespace = $1 AND state <> 'staged'
			AND NOT (`+mirrorPendingSQL+`) AND finished_at < now() - make_interval(secs => $2)`, s.cfg.Namespace, partsKeep.Seconds()); err != nil {
			errs = append(errs, fmt.Errorf("remove finished parts: %w", err))
		}
	}
	return errors.Join(errs...)
}

// mirrorRetryDelay is the least time between two tries of a table's
// pending mirror after a failure (outside its changelog commits).
const mirrorRetryDelay = time.Second

// committerPoll is how often the committer loop looks for staged parts:
// often enough that a slot's commit starts soon after its gather delay.
func committerPoll(interval time.Duration) time.Duration {
	return min(max(interval/20, 10*time.Millisecond), 100*time.Millisecond)
}

// commitDue reports whether a table with staged parts may be committed
// now: it has urgent parts, or its gather delay into the slot has passed
// and the table has no snapshot in this slot yet (commitPublished checks
// the table's own latest snapshot again).
func (s *Sink) commitDue(name string, now time.Time, urgent bool) bool {
	if urgent {
		return true
	}
	iv := s.cfg.CommitterInterval
	if now.Sub(commitslot.Start(now, iv)) < commitslot.Gather(iv) {
		return false
	}
	return commitslot.Of(s.committer.lastSnapOf(name), iv) < commitslot.Of(now, iv)
}

// tableWork is what a table's committer has to do.
type tableWork struct {
	staged, urgent bool  // staged parts, some of them urgent
	mirrorPending  bool  // committed parts whose mirror is not applied
	stagedRows     int64 // rows of the staged parts, changelog and mirror
}

// stagedTables returns the tables with staged parts or pending mirrors.
func stagedTables(ctx context.Context, db *sql.DB, ns string) (map[string]tableWork, error) {
	rows, err := db.QueryContext(ctx, `SELECT table_name, bool_or(state = 'staged'), bool_or(state = 'staged' AND urgent),
		bool_or(`+mirrorPendingSQL+`), coalesce(sum(rows + mirror_rows) FILTER (WHERE state = 'staged'), 0)
		FROM `+PartsTable+` WHERE namespace = $1 AND (state = 'staged' OR `+mirrorPendingSQL+`) GROUP BY 1`, ns)
	if err != nil {
		return nil, fmt.Errorf("iceberg: list tables with staged parts: %w", err)
	}
	defer rows.Close()
	out := make(map[string]tableWork)
	for rows.Next() {
		var (
			n string
			w tableWork
		)
		if err := rows.Scan(&n, &w.staged, &w.urgent, &w.mirrorPending, &w.stagedRows); err != nil {
			return nil, fmt.Errorf("iceberg: list tables with staged parts: %w", err)
		}
		out[n] = w
	}
	return out, rows.Err()
}

// committerLockKey is the advisory lock key of a table's committer role.
func (s *Sink) committerLockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(committerLockPrefix + strings.Join(s.ns, ".") + "." + sink.SanitizeName(name)))
	return int64(h.Sum64())
}

// takeCommitter reports whether this instance holds the table's committer
// role, taking it if free.
func (s *Sink) takeCommitter(ctx context.Context, name string) (bool, error) {
	c := &s.committer
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		// A broken session lost every lock it held.
		if err := c.conn.PingContext(ctx); err != nil {
			s.log.Warn("elected committer: the locks' session broke; the roles are lost", "err", err)
			discardConn(c.conn)
			c.conn = nil
			clear(c.held)
		}
	}
	if c.held[name] {
		return true, nil
	}
	if c.conn == nil {
		conn, err := s.partsDB().Conn(ctx)
		if err != nil {
			return false, fmt.Errorf("iceberg: committer lock: %w", err)
		}
		if t := s.cfg.FenceIdleTxTimeout; t > 0 {
			// PostgreSQL 14 and later end the session of a holder paused
			// longer than this (keepCommitterSession pings it meanwhile).
			if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`,
				strconv.FormatInt(max(t.Milliseconds(), 1), 10)); err != nil {
				s.log.Warn("elected committer: idle_session_timeout not set (PostgreSQL before 14?): a paused holder keeps its roles until it resumes", "err", err)
			}
		}
		c.conn = conn
	}
	var got bool
	if err := c.conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, s.committerLockKey(name)).Scan(&got); err != nil {
		discardConn(c.conn)
		c.conn = nil
		clear(c.held)
		return false, fmt.Errorf("iceberg: committer lock: %w", err)
	}
	if got {
		c.held[name] = true
		s.log.Info("elected committer of the table", "table", name)
	}
	return got, nil
}
