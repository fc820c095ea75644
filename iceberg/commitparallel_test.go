package iceberg

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	icebergio "github.com/apache/iceberg-go/io"

	"github.com/dot-do/lakehouse-rpc/sink"
)

var parTables = []string{"accounts", "events", "orders", "users"}

// parFlush is one flush with keyed changes of every table of parTables,
// applied to models.
func parFlush(g *keyedGen, models map[string]mirrorModel, i int) *sink.Flush {
	var out *sink.Flush
	for _, name := range parTables {
		f := g.flush(name, 1_700_000_000_000+uint64(i)*1000, 10, "src-a", "src-b")
		applyFlush(models[name], f)
		if out == nil {
			out = f
			continue
		}
		out.Tables = append(out.Tables, f.Tables...)
		for src, w := range f.Watermarks {
			sink.MergeWatermark(out.Watermarks, src, w)
		}
	}
	return out
}

func newModels() map[string]mirrorModel {
	m := map[string]mirrorModel{}
	for _, name := range parTables {
		m[name] = mirrorModel{}
	}
	return m
}

// stageAll stages the flushes.
func stageAll(t *testing.T, s *Sink, fs ...*sink.Flush) []sink.Staged {
	t.Helper()
	var out []sink.Staged
	for _, f := range fs {
		st, err := s.Stage(context.Background(), f)
		if err != nil {
			t.Fatalf("stage flush %d: %v", f.ID, err)
		}
		out = append(out, st)
	}
	return out
}

// resultShape is a Result without what differs between two equal runs
// (snapshot ids, durations).
func resultShape(r sink.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "written=%d skipped=%d tables=%d paths=%d", r.RowsWritten, r.RowsSkipped, r.Tables, len(r.Paths))
	for _, c := range r.Commits {
		fmt.Fprintf(&b, " %s:%d", c.Table, c.Rows)
	}
	return b.String()
}

// barrier lets n callers through once all n have arrived: a caller that
// waits longer than the timeout (the others never came, so the calls did
// not overlap) gets an error. Later calls pass at once.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	open    chan struct{}
	timeout time.Duration
}

func newBarrier(n int) *barrier {
	return &barrier{n: n, open: make(chan struct{}), timeout: 20 * time.Second}
}

func (b *barrier) wait(name string) error {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	select {
	case <-b.open:
		return nil
	case <-time.After(b.timeout):
		return fmt.Errorf("table %s: the other tables' commits never ran beside this one", name)
	}
}

// TestCommitTablesInParallel: with CommitParallelism 4 the four tables of
// a commit are in their changelog commits at the same time (a barrier in
// BeforeTableCommit lets them through only once all four are there, so a
// serial commit fails it), each mirror commit comes after its own
// changelog's, and the tables end up as with serial commits: every mirror
// equals the model, every change is in its changelog once, and the
// Results of a parallel and a serial sink fed the same flushes are equal
// (tables in name order).
func TestCommitTablesInParallel(t *testing.T) {
	ctx := context.Background()
	var (
		bar        = newBarrier(len(parTables))
		armed      atomic.Bool
		parallel   *Sink
		mirrorErrs = make(chan error, 100)
		commitID   atomic.Uint64
	)
	armed.Store(true)
	parallel = openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = 2
		c.CommitParallelism = 4
		c.BeforeTableCommit = func(name string) error {
			if armed.Load() {
				return bar.wait(name)
			}
			return nil
		}
		// The changelog of the table holds this commit when its mirror
		// commits.
		c.BeforeMirrorCommit = func(name string) error {
			tbl, err := parallel.LoadTable(ctx, name)
			if err != nil {
				mirrorErrs <- err
				return nil
			}
			snap := tbl.CurrentSnapshot()
			if want := strconv.FormatUint(commitID.Load(), 10); snap == nil || snap.Summary.Properties[SummaryFlushID] != want {
				mirrorErrs <- fmt.Errorf("table %s: mirror commit before its changelog's commit %s", name, want)
			}
			return nil
		}
	})
	serial := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorPartitionBuckets = 2; c.CommitParallelism = 1 })

	gp, gs := newKeyedGen(5, 30), newKeyedGen(5, 30)
	models, serialModels := newModels(), newModels()
	var total int64
	for i := range 6 {
		var fp, fs []*sink.Flush
		for range 1 + i%2 {
			f := parFlush(gp, models, i)
			total += flushRows(f)
			fp = append(fp, f)
			fs = append(fs, parFlush(gs, serialModels, i))
		}
		id := commitID.Add(1)
		resP, err := parallel.CommitStaged(ctx, stageAll(t, parallel, fp...), sink.CommitInfo{ID: id, Reason: "test"})
		if err != nil {
			t.Fatalf("commit %d, parallel: %v", i, err)
		}
		armed.Store(false) // the first commit proved the overlap
		resS, err := serial.CommitStaged(ctx, stageAll(t, serial, fs...), sink.CommitInfo{ID: id, Reason: "test"})
		if err != nil {
			t.Fatalf("commit %d, serial: %v", i, err)
		}
		if got, want := resultShape(resP), resultShape(resS); got != want {
			t.Errorf("commit %d: parallel result %s\nserial result   %s", i, got, want)
		}
		if i == 0 && len(resP.Commits) != 2*len(parTables) {
			t.Errorf("commit %d: %d table commits, want a changelog and a mirror commit of each table", i, len(resP.Commits))
		}
	}
	close(mirrorErrs)
	for err := range mirrorErrs {
		t.Error(err)
	}
	if !reflect.DeepEqual(models, serialModels) {
		t.Fatal("the two generators diverged: the test compares nothing")
	}
	checkMirrorState(t, parallel, parTables, models, total)
	checkMirrorState(t, serial, parTables, serialModels, total)
}

// TestCommitTableFailureLeavesOthers: a storage failure in one table's
// commit fails that table alone: the other tables commit (changelog and
// mirror) and are in the Result, the error names the failing table only,
// and a retry of the same staged flushes, as the server's next flush
// does, commits the rest exactly once.
func TestCommitTableFailureLeavesOthers(t *testing.T) {
	ctx := context.Background()
	var (
		failing atomic.Bool
		fails   atomic.Int64
	)
	const victim = "orders"
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = 2
		c.WrapIO = func(fs icebergio.IO) icebergio.IO {
			w, ok := fs.(icebergio.WriteFileIO)
			if !ok {
				t.Errorf("table IO %T cannot write", fs)
				return fs
			}
			// The victim's changelog metadata (manifests): its data files
			// are staged before the failure starts.
			return flakyIO{WriteFileIO: w, failing: &failing, mode: "create", match: "/cdc.db/" + victim + "/metadata/", fails: &fails}
		}
	})
	g := newKeyedGen(9, 30)
	models := newModels()
	f1 := parFlush(g, models, 0)
	mustCommit(t, s, f1)
	total := flushRows(f1)
	before := mirrorSnapshots(t, s, parTables...)

	f2, f3 := parFlush(g, models, 1), parFlush(g, models, 2)
	total += flushRows(f2) + flushRows(f3)
	staged := stageAll(t, s, f2, f3)
	failing.Store(true)
	res, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: 2, Reason: "test"})
	if !errors.Is(err, errInjected) && !errors.Is(err, ErrIncompleteWrite) {
		t.Fatalf("commit with %s's storage failing: %v", victim, err)
	}
	if fails.Load() == 0 {
		t.Fatal("no injected failure was hit")
	}
	if !strings.Contains(err.Error(), strconv.Quote(victim)) {
		t.Errorf("the error does not name table %q: %v", victim, err)
	}
	for _, name := range parTables {
		if name != victim && strings.Contains(err.Error(), strconv.Quote(name)) {
			t.Errorf("the error names table %q, which committed: %v", name, err)
		}
	}
	var want []string
	for _, name := range parTables {
		if name != victim {
			want = append(want, name, s.cfg.MirrorNamespace+"."+name)
		}
	}
	var got []string
	for _, c := range res.Commits {
		got = append(got, c.Table)
	}
	if !reflect.DeepEqual(got, want) || res.Tables != len(parTables)-1 {
		t.Errorf("result of the partly failed commit: %d tables, commits %v, want %v", res.Tables, got, want)
	}
	after := mirrorSnapshots(t, s, parTables...)
	for _, name := range parTables {
		grew := after[name] > before[name]
		if grew == (name == victim) {
			t.Errorf("table %s: mirror snapshots %d -> %d after the partly failed commit", name, before[name], after[name])
		}
	}

	// The retry commits the victim and nothing else again.
	failing.Store(false)
	res, err = s.CommitStaged(ctx, staged, sink.CommitInfo{ID: 3, Reason: "test"})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	victimRows := int64(0)
	for _, f := range []*sink.Flush{f2, f3} {
		for _, tb := range f.Tables {
			if tb.Name == victim {
				victimRows += int64(len(tb.Rows))
			}
		}
	}
	if res.RowsWritten != victimRows || res.RowsSkipped != flushRows(f2)+flushRows(f3)-victimRows || res.Tables != 1 {
		t.Errorf("retry result %+v: want %d rows of %s written, the rest skipped", res, victimRows, victim)
	}
	final := mirrorSnapshots(t, s, parTables...)
	for _, name := range parTables {
		if grew := final[name] > after[name]; grew != (name == victim) {
			t.Errorf("table %s: mirror snapshots %d -> %d after the retry", name, after[name], final[name])
		}
	}
	checkMirrorState(t, s, parTables, models, total)
}

// TestCommitFailuresJoined: when several tables fail, the error names
// each, in name order, and the others commit.
func TestCommitFailuresJoined(t *testing.T) {
	ctx := context.Background()
	errBoom := errors.New("boom")
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorPartitionBuckets = 2
		c.BeforeTableCommit = func(name string) error {
			if name == "users" || name == "events" {
				return fmt.Errorf("%s: %w", name, errBoom)
			}
			return nil
		}
	})
	g := newKeyedGen(3, 20)
	res, err := s.Commit(ctx, parFlush(g, newModels(), 0))
	if !errors.Is(err, errBoom) {
		t.Fatalf("commit: %v", err)
	}
	msg := err.Error()
	ie, iu := strings.Index(msg, `table "events"`), strings.Index(msg, `table "users"`)
	if ie < 0 || iu < 0 || ie > iu {
		t.Errorf("the error should name events, then users: %v", err)
	}
	if res.Tables != 2 || len(res.Commits) != 4 || res.Commits[0].Table != "accounts" || res.Commits[2].Table != "orders" {
		t.Errorf("result %+v: want accounts and orders committed", res)
	}
}

// TestCommitLockPerTable: a table whose commit lock is held (a maintenance
// job) holds back its own commits only.
func TestCommitLockPerTable(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	g := newKeyedGen(4, 20)
	unlock, err := s.lockTable(ctx, s.Identifier("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	within(t, 20*time.Second, "a commit of another table", func() {
		if _, err := s.Commit(ctx, g.flush("users", 1_700_000_000_000, 10, "src-a")); err != nil {
			t.Errorf("commit of another table: %v", err)
		}
	})
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.Commit(cctx, g.flush("orders", 1_700_000_000_000, 10, "src-a")); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "commit lock") {
		t.Errorf("commit of the locked table: %v", err)
	}
}

func TestCommitParallelismValidated(t *testing.T) {
	for _, n := range []int{-1, MaxCommitParallelism + 1} {
		_, err := Config{DataDir: t.TempDir(), CommitParallelism: n}.withDefaults()
		if err == nil || !strings.Contains(err.Error(), "CommitParallelism") {
			t.Errorf("CommitParallelism %d: %v", n, err)
		}
	}
	cfg, err := Config{DataDir: t.TempDir()}.withDefaults()
	if err != nil || cfg.CommitParallelism != AutoCommitParallelism() {
		t.Errorf("default: %d, %v, want %d", cfg.CommitParallelism, err, AutoCommitParallelism())
	}
}

// TestAutoCommitParallelism: the default leaves half the CPUs to ingest
// (two cores commit one table at a time) and stays within its cap.
func TestAutoCommitParallelism(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for procs, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 6: 3, 8: 4, 64: MaxAutoCommitParallelism} {
		runtime.GOMAXPROCS(procs)
		if got := AutoCommitParallelism(); got != want {
			t.Errorf("GOMAXPROCS %d: %d tables at once, want %d", procs, got, want)
		}
	}
}

func TestSmallestFirst(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	byTable := map[string][]*stagedTable{
		"a": {{rows: 50}, {rows: 50}},
		"b": {{rows: 10, mirror: &mirrorPart{rows: 10}}},
		"c": {{rows: 5}},
		"d": {{rows: 20}},
	}
	if got, want := smallestFirst(names, byTable), []int{2, 1, 3, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("order %v, want %v (c 5 rows, b 20, d 20, a 100; ties by name)", got, want)
	}
}
