package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/fence"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// committerInstance is one simulated instance: a sink with the elected
// committer on, and its lease store holding its sources.
type committerInstance struct {
	id     string
	s      *Sink
	leases *coord.Store
	epochs map[string]uint64
}

const testCommitterInterval = 700 * time.Millisecond

func openCommitterInstances(t *testing.T, dsn string, ids []string, mod func(*Config)) []*committerInstance {
	t.Helper()
	wh := "file://" + t.TempDir() + "/warehouse"
	var out []*committerInstance
	for _, id := range ids {
		st, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: id, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		s := openTestSink(t, t.TempDir(), func(c *Config) {
			c.CatalogURI = dsn
			c.Warehouse = wh
			c.ElectedCommitter = true
			c.CommitterInterval = testCommitterInterval
			c.InstanceID = id
			if mod != nil {
				mod(c)
			}
		})
		out = append(out, &committerInstance{id: id, s: s, leases: st, epochs: make(map[string]uint64)})
	}
	return out
}

func (ci *committerInstance) acquire(t *testing.T, src string) {
	t.Helper()
	l, err := ci.leases.Acquire(context.Background(), src, coord.Resume{})
	if err != nil {
		t.Fatal(err)
	}
	ci.epochs[src] = l.Epoch
}

// commit stages f and commits it with the instance's claims on f's sources.
func (ci *committerInstance) commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	st, err := ci.s.Stage(ctx, f)
	if err != nil {
		return sink.Result{}, err
	}
	return ci.commitStaged(ctx, f, st)
}

// commitStaged commits st, staged from f, with the instance's claims on f's
// sources.
func (ci *committerInstance) commitStaged(ctx context.Context, f *sink.Flush, st sink.Staged) (sink.Result, error) {
	c := fence.Claims{Owner: ci.id}
	for src := range f.Watermarks {
		c.Claims = append(c.Claims, fence.Claim{Source: src, Epoch: ci.epochs[src]})
	}
	return ci.s.CommitStaged(fence.With(ctx, c), []sink.Staged{st}, sink.CommitInfo{ID: f.ID, Reason: "scheduled"})
}

// appendSnapshots returns the timestamps (ms) of the table's append
// snapshots, oldest first.
func appendSnapshots(t *testing.T, s *Sink, name string) []int64 {
	t.Helper()
	tbl, err := s.LoadTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, snap := range tbl.Metadata().Snapshots() {
		if snap.Summary != nil && snap.Summary.Properties[SummaryFlushID] != "" {
			out = append(out, snap.TimestampMs)
		}
	}
	return out
}

// sharedSnapshots counts the table's snapshots holding parts of several
// instances (SummaryInstances).
func sharedSnapshots(t *testing.T, s *Sink, name string) int {
	t.Helper()
	tbl, err := s.LoadTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, snap := range tbl.Metadata().Snapshots() {
		if snap.Summary != nil && strings.Contains(snap.Summary.Properties[SummaryInstances], ",") {
			n++
		}
	}
	return n
}

// TestElectedCommitterOneSnapshotPerInterval: three instances on one
// PostgreSQL catalog, each writing its own source to the same tables, round
// after round. A table's snapshots are at least one commit interval apart
// and some hold the parts of several instances (without the race detector,
// each round's three parts share one snapshot); every row is stored once,
// and each source's watermark is its last batch. Without the elected
// committer each instance commits its own part: three snapshots per table
// per round, some within an interval (checked by turning ElectedCommitter
// off: the count and the gaps fail).
func TestElectedCommitterOneSnapshotPerInterval(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	insts := openCommitterInstances(t, dsn, []string{"inst-a", "inst-b", "inst-c"}, nil)
	for i, ci := range insts {
		ci.acquire(t, testSources[i].id)
	}
	const rounds = 4
	var all []*sink.Flush
	for r := uint64(1); r <= rounds; r++ {
		// Staged first, then published together: a round's parts meet in
		// one committer tick (unless a tick falls between two inserts).
		var wg sync.WaitGroup
		errs := make([]error, len(insts))
		for i, ci := range insts {
			f := w1Flush(r*10+uint64(i), testSources[i:i+1], r, 1, 8)
			all = append(all, f)
			st, err := ci.s.Stage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				res, err := ci.commitStaged(cctx, f, st)
				if err == nil && res.RowsWritten != flushRows(f) {
					t.Errorf("%s round %d: %d rows written, want %d", ci.id, r, res.RowsWritten, flushRows(f))
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s round %d: %v", insts[i].id, r, err)
			}
		}
	}
	diffKeys(t, flushKeys(all...), scanKeys(t, insts[0].s))
	infos, err := insts[0].s.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shared := 0
	for _, info := range infos {
		shared += sharedSnapshots(t, insts[0].s, info.Name)
		snaps := appendSnapshots(t, insts[0].s, info.Name)
		// How many parts share a snapshot depends on how close together
		// the instances publish (under the race detector on 2 cores, a
		// second apart); how far apart snapshots are does not.
		if len(snaps) < rounds || len(snaps) > 3*rounds {
			t.Errorf("table %s: %d committer snapshots for %d rounds of 3 instances", info.Name, len(snaps), rounds)
		}
		for i := 1; i < len(snaps); i++ {
			at, prev := time.UnixMilli(snaps[i]), time.UnixMilli(snaps[i-1])
			if commitslot.Of(at, testCommitterInterval) == commitslot.Of(prev, testCommitterInterval) {
				t.Errorf("table %s: snapshots %d ms apart in one commit slot (%v)", info.Name, at.Sub(prev).Milliseconds(), testCommitterInterval)
			}
		}
	}
	if shared == 0 {
		t.Error("no snapshot holds the parts of several instances")
	}
	wm, err := insts[1].s.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range testSources {
		if wm[src.id].BatchSeq != rounds {
			t.Errorf("watermark of %s = %+v, want batch %d", src.id, wm[src.id], rounds)
		}
	}
	// Every part was committed once, by one committer or another.
	var parts, want int64
	for _, ci := range insts {
		parts += ci.s.CommitterTotals().PartsCommitted
	}
	for _, f := range all {
		want += int64(len(f.Tables))
	}
	if parts != want {
		t.Errorf("parts committed = %d, want %d", parts, want)
	}
}

// moveBeforeFirstCommit returns a Config.BeforeTableCommit hook that, at
// the first table commit, moves source to another instance ('inst-z', a
// new epoch), and a channel that gets the move's error.
func moveBeforeFirstCommit(dsn, source string) (func(string) error, <-chan error) {
	var once sync.Once
	moved := make(chan error, 1)
	return func(string) error {
		once.Do(func() {
			db, err := sql.Open("pgx", dsn)
			if err == nil {
				_, err = db.Exec(`UPDATE `+fence.LeaseTable+` SET owner = 'inst-z', epoch = epoch + 1 WHERE source_id = $1`, source)
				_ = db.Close()
			}
			moved <- err
		})
		return nil
	}, moved
}

// TestElectedCommitterFencesMovedSource: two instances publish parts in
// one round; between the committer's claim pre-check and its catalog
// commit, a's source moves to another instance. a's parts are fenced (a's
// commit reports a *fence.Error naming the source), b's parts are committed
// in the same round, and none of a's rows is stored. Without the claims
// check inside the catalog transaction, a's rows are committed (checked by
// skipping checkPartClaims in partsCommit.apply).
func TestElectedCommitterFencesMovedSource(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	move, moved := moveBeforeFirstCommit(dsn, testSources[0].id)
	insts := openCommitterInstances(t, dsn, []string{"inst-a", "inst-b"}, func(c *Config) { c.BeforeTableCommit = move })
	a, b := insts[0], insts[1]
	a.acquire(t, testSources[0].id)
	b.acquire(t, testSources[1].id)
	fa := w1Flush(1, testSources[0:1], 1, 1, 8)
	fb := w1Flush(2, testSources[1:2], 1, 1, 8)
	var (
		wg         sync.WaitGroup
		errA, errB error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, errA = a.commit(cctx, fa)
	}()
	go func() {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, errB = b.commit(cctx, fb)
	}()
	wg.Wait()
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	var fe *fence.Error
	if !errors.As(errA, &fe) || len(fe.Failed) != 1 || fe.Failed[0].Source != testSources[0].id {
		t.Fatalf("a's commit after its source moved: %v, want a fence error naming %s", errA, testSources[0].id)
	}
	if errB != nil {
		t.Fatalf("b's commit: %v", errB)
	}
	diffKeys(t, flushKeys(fb), scanKeys(t, b.s))
	fenced := a.s.CommitterTotals().PartsFenced + b.s.CommitterTotals().PartsFenced
	if want := int64(len(fa.Tables)); fenced != want {
		t.Errorf("parts fenced = %d, want %d (one per table of a's flush)", fenced, want)
	}
}

// TestElectedCommitterFenceNamesOnlyMovedSources: a's flush holds two
// sources, and one of them moves before the commit. Each part holding it
// is fenced as a whole, but the fence error names only the moved source:
// the server drops the lease (and the batches) of every source it names,
// so naming the one that stayed would lose its acked batches (seen in the
// three-process run: an ok-mode source lost entries).
func TestElectedCommitterFenceNamesOnlyMovedSources(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	move, moved := moveBeforeFirstCommit(dsn, testSources[0].id)
	a := openCommitterInstances(t, dsn, []string{"inst-a"}, func(c *Config) { c.BeforeTableCommit = move })[0]
	a.acquire(t, testSources[0].id)
	a.acquire(t, testSources[2].id)
	both := []testSource{testSources[0], testSources[2]}
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := a.commit(cctx, w1Flush(1, both, 1, 1, 8))
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	var fe *fence.Error
	if !errors.As(err, &fe) {
		t.Fatalf("commit after one of its sources moved: %v, want a fence error", err)
	}
	if len(fe.Failed) != 1 || fe.Failed[0].Source != testSources[0].id {
		t.Fatalf("fence error names %+v, want only the moved source %s", fe.Failed, testSources[0].id)
	}
}

// TestElectedCommitterHandOver: the instance holding most tables'
// committer roles closes (its session, and so its locks, end); the other instance's next
// commit is committed by itself at its next interval. Without Close ending
// the session the survivor would wait forever (checked by not discarding
// the locks' connection in stopCommitter: the commit times out).
func TestElectedCommitterHandOver(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	insts := openCommitterInstances(t, dsn, []string{"inst-a", "inst-b"}, nil)
	for i, ci := range insts {
		ci.acquire(t, testSources[i].id)
	}
	var all []*sink.Flush
	for i, ci := range insts {
		f := w1Flush(uint64(i+1), testSources[i:i+1], 1, 1, 8)
		all = append(all, f)
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := ci.commit(cctx, f)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Roles are per table: close the instance holding most of them.
	holder, other := insts[0], insts[1]
	if holder.s.CommitterTotals().Commits < other.s.CommitterTotals().Commits {
		holder, other = other, holder
	}
	if holder.s.CommitterTotals().Commits == 0 {
		t.Fatalf("committer commits: %+v and %+v, want a holder", holder.s.CommitterTotals(), other.s.CommitterTotals())
	}
	before := other.s.CommitterTotals().Commits
	if err := holder.s.Close(); err != nil {
		t.Fatal(err)
	}
	src := testSources[0:1]
	if other == insts[1] {
		src = testSources[1:2]
	}
	f := w1Flush(9, src, 2, 1, 8)
	all = append(all, f)
	cctx, cancel := context.WithTimeout(ctx, 20*testCommitterInterval)
	defer cancel()
	if _, err := other.commit(cctx, f); err != nil {
		t.Fatalf("commit after the committer closed: %v", err)
	}
	if got := other.s.CommitterTotals().Commits - before; got != int64(len(f.Tables)) {
		t.Errorf("the survivor committed %d tables, want all %d", got, len(f.Tables))
	}
	diffKeys(t, flushKeys(all...), scanKeys(t, other.s))
}

// TestElectedCommitterConfig: the option is refused without PostgreSQL
// and without an instance id; it is accepted with the mirror (refused
// before the committer committed mirrors).
func TestElectedCommitterConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"sqlite":      {DataDir: t.TempDir(), ElectedCommitter: true, InstanceID: "a"},
		"no instance": {DataDir: t.TempDir(), CatalogURI: "postgres://x/y", ElectedCommitter: true},
	} {
		if _, err := cfg.withDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	mirror := Config{DataDir: t.TempDir(), CatalogURI: "postgres://x/y", ElectedCommitter: true, InstanceID: "a", Mirror: true}
	if _, err := mirror.withDefaults(); err != nil {
		t.Errorf("mirror with the elected committer: %v", err)
	}
}

// publishAndDie has instance ci publish f's parts, stop waiting once they
// are all in PartsTable (its committer interval is an hour: it commits
// nothing itself), and close: a stager that died after publishing.
func publishAndDie(t *testing.T, ci *committerInstance, dsn string, f *sink.Flush) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The tables' committer roles are held here until ci is closed: a table
	// never committed is due at once, and ci's own committer would
	// otherwise commit the parts at its first poll.
	roles, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer roles.Close()
	for _, tb := range f.Tables {
		if _, err := roles.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, ci.s.committerLockKey(tb.Name)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := ci.s.Stage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := ci.commitStaged(cctx, f, st)
		done <- err
	}()
	for deadline := time.Now().Add(time.Minute); ; {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM `+PartsTable+` WHERE owner = $1 AND state = 'staged'`, ci.id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == len(f.Tables) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d parts published", n, len(f.Tables))
		}
		select {
		case err := <-done: // the stager gave up before publishing everything
			t.Fatalf("%d of %d parts published, then the stager returned: %v", n, len(f.Tables), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting stager: %v, want canceled", err)
	}
	if err := ci.s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := roles.ExecContext(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
}

// TestElectedCommitterDeadStager: a stager that dies after publishing has
// its parts committed by another instance's committer (its claims still
// hold), once.
func TestElectedCommitterDeadStager(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	a := openCommitterInstances(t, dsn, []string{"inst-a"}, func(c *Config) { c.CommitterInterval = time.Hour })[0]
	a.acquire(t, testSources[0].id)
	fa := w1Flush(1, testSources[0:1], 1, 2, 8)
	publishAndDie(t, a, dsn, fa)
	// b starts after a died: its committer would commit a's parts at once
	// (their slot has no snapshot), before a stopped waiting for them.
	b := openCommitterInstances(t, dsn, []string{"inst-b"}, nil)[0]
	b.acquire(t, testSources[1].id)
	fb := w1Flush(2, testSources[1:2], 1, 1, 8)
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.commit(cctx, fb); err != nil {
		t.Fatal(err)
	}
	diffKeys(t, flushKeys(fa, fb), scanKeys(t, b.s))
}

// TestElectedCommitterRestartAbandons: an instance restarted on its data
// directory abandons the parts its previous run published and stages its
// log again (here with more batches than the part held): the new part is
// committed and every row is stored once. Without the abandon at Open the
// old part (batch 1) and the new one (batches 1-2) meet in one commit and
// the new one is refused (checked: the commit fails with a fence error).
func TestElectedCommitterRestartAbandons(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	wh := "file://" + t.TempDir() + "/warehouse"
	open := func(interval time.Duration) *committerInstance {
		st, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: "inst-a", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		s := openTestSink(t, t.TempDir(), func(c *Config) {
			c.CatalogURI, c.Warehouse = dsn, wh
			c.ElectedCommitter, c.CommitterInterval, c.InstanceID = true, interval, "inst-a"
		})
		ci := &committerInstance{id: "inst-a", s: s, leases: st, epochs: make(map[string]uint64)}
		ci.acquire(t, testSources[0].id)
		return ci
	}
	publishAndDie(t, open(time.Hour), dsn, w1Flush(1, testSources[0:1], 1, 1, 8))
	a2 := open(testCommitterInterval)
	f := w1Flush(2, testSources[0:1], 1, 2, 8)
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := a2.commit(cctx, f)
	if err != nil {
		t.Fatalf("commit after the restart: %v", err)
	}
	if res.RowsWritten != flushRows(f) {
		t.Errorf("rows written %d, want %d", res.RowsWritten, flushRows(f))
	}
	diffKeys(t, flushKeys(f), scanKeys(t, a2.s))
}

// TestElectedCommitterUrgentParts: with an hour's commit interval, a
// scheduled part is committed in a slot with no snapshot yet; then a
// manual commit's part is committed at once, while a shutdown's waits for
// the next commit slot like a scheduled one.
func TestElectedCommitterUrgentParts(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ci := openCommitterInstances(t, dsn, []string{"inst-a"}, func(c *Config) { c.CommitterInterval = time.Hour })[0]
	src := testSources[0:1]
	ci.acquire(t, src[0].id)
	commit := func(f *sink.Flush, reason string, within time.Duration) error {
		st, err := ci.s.Stage(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		c := fence.Claims{Owner: ci.id, Claims: []fence.Claim{{Source: src[0].id, Epoch: ci.epochs[src[0].id]}}}
		_, err = ci.s.CommitStaged(fence.With(ctx, c), []sink.Staged{st}, sink.CommitInfo{ID: f.ID, Reason: reason})
		return err
	}
	// The slot has no snapshot yet: committed after the gather delay.
	if err := commit(w1Flush(1, src, 1, 1, 8), "scheduled", 30*time.Second); err != nil {
		t.Fatalf("first scheduled commit: %v", err)
	}
	if err := commit(w1Flush(2, src, 2, 1, 8), sink.ReasonManual, 30*time.Second); err != nil {
		t.Fatalf("manual commit in a slot that has a snapshot: %v", err)
	}
	if err := commit(w1Flush(3, src, 3, 1, 8), "shutdown", 3*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second scheduled commit in one slot: %v, want it still waiting for the next slot", err)
	}
}
