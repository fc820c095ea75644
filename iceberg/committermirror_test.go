package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/commitslot"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// mirrorModels keeps both models of the mirror tests: the one of
// checkMirror (iceberg-go's scan, provenance) and the one of icebergcheck's
// own Parquet reader (checkWithReaders).
type mirrorModels struct {
	scan mirrorModel
	own  *mirrormodel.Model
}

func newMirrorModels() *mirrorModels {
	return &mirrorModels{scan: mirrorModel{}, own: mirrormodel.New()}
}

func (m *mirrorModels) apply(f *sink.Flush) {
	applyFlush(m.scan, f)
	for _, tb := range f.Tables {
		bySource := map[string][]codec.Entry{}
		for _, r := range tb.Rows {
			bySource[r.SourceID] = append(bySource[r.SourceID], r.Entry)
		}
		for src, es := range bySource {
			m.own.CommitBatch(src, es)
		}
	}
}

// check compares the mirror of name with both models, read both ways.
func (m *mirrorModels) check(t *testing.T, s *Sink, name string) {
	t.Helper()
	tbl, err := s.LoadMirrorTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), m.scan)
	checkWithReaders(t, s, name, m.own)
}

// mirrorAppendSnapshots returns the timestamps (ms) of the mirror table's
// snapshots that are not compactions (a committer's mirror commits).
func mirrorAppendSnapshots(t *testing.T, s *Sink, name string) []int64 {
	t.Helper()
	tbl, err := s.LoadMirrorTable(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, snap := range tbl.Metadata().Snapshots() {
		if snap.Summary == nil || snap.Summary.Properties[SummaryMaintenance] == "" {
			out = append(out, snap.TimestampMs)
		}
	}
	return out
}

// changeFilesLeft lists the mirror change files under the warehouse.
func changeFilesLeft(t *testing.T, s *Sink) []string {
	t.Helper()
	root := strings.TrimPrefix(s.cfg.Warehouse, "file://")
	var out []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isChangeFilePath(path) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// partCounts counts PartsTable's rows by state, and the committed ones
// whose mirror is pending.
func partCounts(t *testing.T, dsn string) (byState map[string]int, pending int) {
	t.Helper()
	byState, pending, err := readPartCounts(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return byState, pending
}

func readPartCounts(dsn string) (byState map[string]int, pending int, err error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, 0, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT state, count(*), count(*) FILTER (WHERE ` + mirrorPendingSQL + `) FROM ` + PartsTable + ` GROUP BY 1`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	byState = map[string]int{}
	for rows.Next() {
		var (
			st   string
			n, p int
		)
		if err := rows.Scan(&st, &n, &p); err != nil {
			return nil, 0, err
		}
		byState[st] = n
		pending += p
	}
	return byState, pending, rows.Err()
}

// TestElectedCommitterMirrorMatchesModel: three instances, one source
// each, stage random changes over the same 30 keys (deletes included, out
// of event-time order across sources) round after round; the elected
// committers commit the changelog and the mirror. After every round the
// mirror equals the model (latest (event time, source, entry) per key,
// deleted keys gone) through iceberg-go's scan and icebergcheck's own
// reader, and its watermarks are the changelog's; one mirror snapshot per
// changelog snapshot (at most one per commit slot), some holding the parts
// of several instances; no
// change file is left. The mirror compaction that the committer's commits
// wake runs after every round and keeps the mirror equal to the model.
func TestElectedCommitterMirrorMatchesModel(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	insts := openCommitterInstances(t, dsn, []string{"inst-a", "inst-b", "inst-c"}, func(c *Config) {
		c.Mirror, c.MirrorCompactDeleteFiles, c.MirrorPartitionBuckets = true, 3, 2
	})
	sources := []string{"src-a", "src-b", "src-c"}
	for i, ci := range insts {
		ci.acquire(t, sources[i])
	}
	g := newKeyedGen(uint64(time.Now().UnixNano()), 30)
	models := newMirrorModels()
	const rounds = 5
	var total int64
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, len(insts))
		for i, ci := range insts {
			f := g.flush("users", 1_700_000_000_000+uint64(r)*1000, 12, sources[i])
			models.apply(f)
			total += flushRows(f)
			st, err := ci.s.Stage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				_, errs[i] = ci.commitStaged(cctx, f, st)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s round %d: %v", insts[i].id, r, err)
			}
		}
		models.check(t, insts[r%len(insts)].s, "users")
		checkMirrorMarks(t, insts[0].s, "users")
		if t.Failed() {
			t.Fatalf("after round %d", r)
		}
		// The background compaction (RunMirrorCompaction's pass) of the
		// instance whose commits queued the table.
		for _, ci := range insts {
			if err := ci.s.CompactMirrors(ctx); err != nil {
				t.Fatalf("round %d: %s: mirror compaction: %v", r, ci.id, err)
			}
		}
		models.check(t, insts[0].s, "users")
		if t.Failed() {
			t.Fatalf("after the compaction of round %d", r)
		}
	}
	var compactions int64
	for _, ci := range insts {
		compactions += ci.s.MirrorTotals().Compactions
	}
	if compactions == 0 {
		t.Error("no mirror compaction ran")
	}
	snaps := mirrorAppendSnapshots(t, insts[0].s, "users")
	if len(snaps) < rounds || len(snaps) > 3*rounds {
		t.Errorf("%d mirror snapshots for %d rounds of 3 instances", len(snaps), rounds)
	}
	// One mirror commit per changelog commit (so per commit slot): a
	// changelog snapshot between any two mirror snapshots. (The mirror's
	// snapshot follows its changelog's, and may fall in the next slot when
	// the changelog's commit ends late in its own.)
	logSnaps := appendSnapshots(t, insts[0].s, "users")
	for i := 1; i < len(snaps); i++ {
		if !slices.ContainsFunc(logSnaps, func(c int64) bool { return snaps[i-1] < c && c <= snaps[i] }) {
			t.Errorf("mirror snapshots at %d and %d ms with no changelog commit between (changelog's: %v)", snaps[i-1], snaps[i], logSnaps)
		}
	}
	for i := 1; i < len(logSnaps); i++ {
		at, prev := time.UnixMilli(logSnaps[i]), time.UnixMilli(logSnaps[i-1])
		if commitslot.Of(at, testCommitterInterval) == commitslot.Of(prev, testCommitterInterval) {
			t.Errorf("changelog snapshots %d ms apart in one commit slot (%v)", at.Sub(prev).Milliseconds(), testCommitterInterval)
		}
	}
	if len(snaps) == 3*rounds {
		t.Error("no mirror snapshot holds the parts of several instances")
	}
	var mirrorCommits int64
	for _, ci := range insts {
		mirrorCommits += ci.s.MirrorTotals().Commits
	}
	if mirrorCommits != int64(len(snaps)) {
		t.Errorf("committers made %d mirror commits, the mirror has %d snapshots", mirrorCommits, len(snaps))
	}
	infos, err := insts[0].s.Tables(ctx)
	if err != nil || len(infos) != 1 || infos[0].Rows != total {
		t.Errorf("changelog: %+v, %v; want %d rows", infos, err, total)
	}
	if left := changeFilesLeft(t, insts[0].s); len(left) > 0 {
		t.Errorf("change files left after their commits: %v", left)
	}
	if _, pending := partCounts(t, dsn); pending != 0 {
		t.Errorf("%d parts with their mirror pending", pending)
	}
}

// checkMirrorMarks checks that the mirror's watermarks are the
// changelog's.
func checkMirrorMarks(t *testing.T, s *Sink, name string) {
	t.Helper()
	ctx := context.Background()
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	mtbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cw, err1 := watermarksFromProps(tbl.Properties())
	mw, err2 := watermarksFromProps(mtbl.Properties())
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if len(cw) != len(mw) {
		t.Errorf("%s: mirror watermarks %v, changelog's %v", name, mw, cw)
		return
	}
	for src, w := range cw {
		if mw[src] != w {
			t.Errorf("%s: mirror watermarks %v, changelog's %v", name, mw, cw)
			return
		}
	}
}

// openMirrorInstance opens instance id on dsn and the warehouse wh, with
// the mirror on (and mod), holding source src.
func openMirrorInstance(t *testing.T, dsn, wh, id, src string, mod func(*Config)) *committerInstance {
	t.Helper()
	st, err := coord.Open(context.Background(), coord.Options{DSN: dsn, Owner: id, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.CatalogURI, c.Warehouse, c.Mirror = dsn, wh, true
		c.ElectedCommitter, c.CommitterInterval, c.InstanceID = true, testCommitterInterval, id
		if mod != nil {
			mod(c)
		}
	})
	ci := &committerInstance{id: id, s: s, leases: st, epochs: make(map[string]uint64)}
	ci.acquire(t, src)
	return ci
}

// TestElectedCommitterMirrorCrashBetweenCommits: the committer dies
// between a table's changelog commit and its mirror commit (the
// BeforeMirrorCommit hook fails on every try, and the instance is closed
// without acknowledging the commit). Then the parts are committed, their
// mirror pending, their change files kept. The restarted instance's
// committer applies them at its first round, before anything is staged
// again; the write-ahead log's replay of the unacknowledged flush adds no
// mirror snapshot, and the next flush commits normally. At each step the
// mirror equals the model, and at the end no change file is left. Without
// the pending state (parts marked applied with the changelog), the mirror
// misses the crashed flush (checked: the restart's wait times out).
func TestElectedCommitterMirrorCrashBetweenCommits(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	var crashes atomic.Int64
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) {
		c.BeforeMirrorCommit = func(string) error { crashes.Add(1); return errCrash }
	})
	g := newKeyedGen(5, 25)
	models := newMirrorModels()
	f1 := g.flush("users", 1_700_000_000_000, 40, "src-a")
	models.apply(f1)
	st, err := a.s.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := a.commitStaged(cctx, f1, st)
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); crashes.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the mirror commit was never tried")
		}
	}
	byState, pending := partCounts(t, dsn)
	if byState[partCommitted] != 1 || pending != 1 {
		t.Fatalf("after the crash: parts %v, %d with the mirror pending; want 1 committed, pending", byState, pending)
	}
	if left := changeFilesLeft(t, a.s); len(left) != 1 {
		t.Fatalf("after the crash: change files %v, want the pending part's", left)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the stager waiting for the crashed mirror commit: %v, want canceled", err)
	}
	diffKeys(t, flushKeys(f1), scanKeys(t, a.s)) // the changelog has f1
	if err := a.s.Close(); err != nil {
		t.Fatal(err)
	}

	a2 := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, pending := partCounts(t, dsn); pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the restarted committer did not apply the pending mirror")
		}
	}
	models.check(t, a2.s, "users")
	if n := len(mirrorAppendSnapshots(t, a2.s, "users")); n != 1 {
		t.Errorf("%d mirror snapshots after the repair, want 1", n)
	}
	// The log replays f1 (never acknowledged): nothing to apply again.
	cctx2, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	if _, err := a2.commit(cctx2, f1); err != nil {
		t.Fatalf("replay of f1: %v", err)
	}
	if n := len(mirrorAppendSnapshots(t, a2.s, "users")); n != 1 {
		t.Errorf("%d mirror snapshots after the replay of f1, want 1", n)
	}
	f2 := g.flush("users", 1_700_000_001_000, 40, "src-a")
	models.apply(f2)
	if _, err := a2.commit(cctx2, f2); err != nil {
		t.Fatalf("f2: %v", err)
	}
	models.check(t, a2.s, "users")
	checkMirrorMarks(t, a2.s, "users")
	diffKeys(t, flushKeys(f1, f2), scanKeys(t, a2.s))
	if n := len(mirrorAppendSnapshots(t, a2.s, "users")); n != 2 {
		t.Errorf("%d mirror snapshots after f2, want 2", n)
	}
	if left := changeFilesLeft(t, a2.s); len(left) > 0 {
		t.Errorf("change files left: %v", left)
	}
}

// TestElectedCommitterMirrorFailedOnce: the mirror commit fails once
// after the changelog's (a store error, say); the committer's next round
// applies the pending parts, and the stager's commit returns only then.
// The mirror has one snapshot for the flush and equals the model.
func TestElectedCommitterMirrorFailedOnce(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	var (
		fails   atomic.Int64
		pending atomic.Int64
	)
	wh := "file://" + t.TempDir() + "/warehouse"
	a := openMirrorInstance(t, dsn, wh, "inst-a", "src-a", func(c *Config) {
		c.BeforeMirrorCommit = func(string) error {
			if fails.Add(1) == 1 {
				if _, p, err := readPartCounts(dsn); err == nil {
					pending.Store(int64(p))
				}
				return errCrash
			}
			return nil
		}
	})
	g := newKeyedGen(9, 25)
	models := newMirrorModels()
	f := g.flush("users", 1_700_000_000_000, 40, "src-a")
	models.apply(f)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := a.commit(cctx, f); err != nil {
		t.Fatal(err)
	}
	if fails.Load() != 2 || pending.Load() != 1 {
		t.Errorf("mirror commit tried %d times, %d parts pending at the failure; want 2 and 1", fails.Load(), pending.Load())
	}
	models.check(t, a.s, "users")
	snaps := mirrorAppendSnapshots(t, a.s, "users")
	if len(snaps) != 1 {
		t.Errorf("%d mirror snapshots, want 1", len(snaps))
	}
	// The part names the mirror snapshot that applied it (for the
	// stager's result), recorded right after the commit.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mtbl, err := a.s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var got sql.NullInt64
		if err := db.QueryRow(`SELECT max(mirror_snapshot_id) FROM ` + PartsTable).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got.Int64 == mtbl.CurrentSnapshot().SnapshotID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the part's mirror snapshot id is %v, the mirror's %d", got, mtbl.CurrentSnapshot().SnapshotID)
		}
	}
}

// TestElectedCommitterMirrorRetryDelay: a mirror commit that keeps failing
// (a store that is down) is tried again at most every mirrorRetryDelay,
// not at every poll of the committer (every 35 ms here: about 80 tries in
// the 3 s the stager waits, before the delay).
func TestElectedCommitterMirrorRetryDelay(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	var tries atomic.Int64
	a := openMirrorInstance(t, dsn, "file://"+t.TempDir()+"/warehouse", "inst-a", "src-a", func(c *Config) {
		c.BeforeMirrorCommit = func(string) error { tries.Add(1); return errCrash }
	})
	g := newKeyedGen(19, 25)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := a.commit(cctx, g.flush("users", 1_700_000_000_000, 20, "src-a")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("commit with a failing mirror: %v, want it waiting", err)
	}
	if n := tries.Load(); n < 1 || n > 5 {
		t.Errorf("the mirror commit was tried %d times in 3 s, want 1 to 5 (one a second)", n)
	}
}
