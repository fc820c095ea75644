package iceberg

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestElectedCommitterTablesInParallel: the elected committer commits the
// tables of a round in parallel too. BeforeTableCommit holds each table's
// commit until all four are in theirs (or, should a round have found only
// some of the tables due, for a while): with serial commits never
// more than one is. The mirrors equal the model and every change is in
// its changelog once.
func TestElectedCommitterTablesInParallel(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	var (
		mu               sync.Mutex
		inFlight, most   int
		allIn            = make(chan struct{})
		allInOnce        sync.Once
		holdAtMost       = 5 * time.Second
		commitsInOverlap atomic.Int64
	)
	insts := openCommitterInstances(t, dsn, []string{"inst-a"}, func(c *Config) {
		c.Mirror, c.MirrorPartitionBuckets = true, 2
		c.CommitParallelism = 4
		c.BeforeTableCommit = func(string) error {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			if inFlight == len(parTables) {
				allInOnce.Do(func() { close(allIn) })
			}
			mu.Unlock()
			select {
			case <-allIn:
				commitsInOverlap.Add(1)
			case <-time.After(holdAtMost):
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
			return nil
		}
	})
	ci := insts[0]
	ci.acquire(t, "src-a")
	ci.acquire(t, "src-b")
	g := newKeyedGen(11, 30)
	models := newModels()
	var total int64
	for i := range 3 {
		f := parFlush(g, models, i)
		total += flushRows(f)
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := ci.commit(cctx, f)
		cancel()
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if res.RowsWritten != flushRows(f) {
			t.Errorf("commit %d: %d rows written, want %d", i, res.RowsWritten, flushRows(f))
		}
	}
	mu.Lock()
	if most < 2 {
		t.Errorf("at most %d table commit at a time: the committer commits its tables one after the other", most)
	}
	mu.Unlock()
	t.Logf("at most %d table commits at once; %d commits met all four", most, commitsInOverlap.Load())
	checkMirrorState(t, ci.s, parTables, models, total)
}

// sizedFlush returns a flush from source "src" with one table per entry of
// sizes, holding that many new rows.
func sizedFlush(id uint64, sizes map[string]int) *sink.Flush {
	f := &sink.Flush{ID: id, Time: time.Now(), Watermarks: map[string]sink.Watermark{}}
	seq := id * 100_000
	for _, name := range slices.Sorted(maps.Keys(sizes)) {
		tb := sink.Table{Name: name}
		for i := range sizes[name] {
			seq++
			tb.Rows = append(tb.Rows, sink.Row{SourceID: "src", BatchSeq: id, Entry: codec.Entry{Sequence: seq,
				Timestamp: 1_700_000_000_000 + seq, Op: codec.OpInsert, Table: []byte(name),
				RowID: fmt.Appendf(nil, "k%d", i), After: []byte(`{"v":1}`)}})
		}
		f.Tables = append(f.Tables, tb)
		sink.MergeWatermark(f.Watermarks, "src", sink.Watermark{BatchSeq: id, EntrySeq: seq})
	}
	return f
}

// TestCommitsSmallestTableFirst: one table at a time, a commit starts with
// the table with the fewest staged rows, directly and through the elected
// committer (which committed in name order before).
func TestCommitsSmallestTableFirst(t *testing.T) {
	ctx := context.Background()
	sizes := map[string]int{"a_big": 300, "b_small": 1, "c_mid": 30}
	want := []string{"b_small", "c_mid", "a_big"}
	var (
		mu    sync.Mutex
		order []string
	)
	record := func(c *Config) {
		c.Mirror = true
		c.CommitParallelism = 1
		c.BeforeTableCommit = func(name string) error {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, name)
			return nil
		}
	}
	check := func(t *testing.T) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(order, want) {
			t.Errorf("tables committed in the order %v, want %v", order, want)
		}
		order = nil
	}
	t.Run("direct", func(t *testing.T) {
		s := openTestSink(t, t.TempDir(), record)
		mustCommit(t, s, sizedFlush(1, sizes))
		check(t)
	})
	t.Run("elected committer", func(t *testing.T) {
		dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
		ci := openCommitterInstances(t, dsn, []string{"inst-a"}, record)[0]
		ci.acquire(t, "src")
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := ci.commit(cctx, sizedFlush(1, sizes)); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
}

// TestElectedCommitterPublishesAFlushAtOnce: a flush's parts are published
// in one transaction. A trigger refuses the part of the last table; none of
// the flush's parts may be left published (before, the first two were, and
// a committer round could take them alone: TestCommitsSmallestTableFirst
// then saw the tables committed in name order). Without the trigger, the
// same staged flush is committed again, every row once.
func TestElectedCommitterPublishesAFlushAtOnce(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	ci := openCommitterInstances(t, dsn, []string{"inst-a"}, nil)[0]
	ci.acquire(t, "src")
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE FUNCTION refuse_part() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.table_name = 'c_refused' THEN RAISE EXCEPTION 'part refused by the test'; END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER refuse_part BEFORE INSERT ON ` + PartsTable + ` FOR EACH ROW EXECUTE FUNCTION refuse_part()`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	f := sizedFlush(1, map[string]int{"a_ok": 5, "b_ok": 3, "c_refused": 2})
	st, err := ci.s.Stage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := ci.commitStaged(cctx, f, st); err == nil || !strings.Contains(err.Error(), "part refused by the test") {
		t.Fatalf("commit with a refused part: %v, want the trigger's error", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+PartsTable).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d parts published by a flush whose publication failed, want 0", n)
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse_part ON `+PartsTable); err != nil {
		t.Fatal(err)
	}
	res, err := ci.commitStaged(cctx, f, st)
	if err != nil {
		t.Fatalf("commit again: %v", err)
	}
	if res.RowsWritten != flushRows(f) {
		t.Errorf("%d rows written, want %d", res.RowsWritten, flushRows(f))
	}
	diffKeys(t, flushKeys(f), scanKeys(t, ci.s))
}
