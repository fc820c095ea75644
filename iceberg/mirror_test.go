package iceberg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	iceberg "github.com/apache/iceberg-go"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// mirrorModel is the expected current state: the winning change per key,
// deletes included (a deleted key is absent from the mirror).
type mirrorModel map[string]modelChange

type modelChange struct {
	ord   orderKey
	op    codec.Op
	after string
}

func (m mirrorModel) apply(src string, r sink.Row) {
	ord := orderKey{r.Timestamp, src, r.Sequence}
	if cur, ok := m[string(r.RowID)]; ok && compareOrder(ord, cur.ord) <= 0 {
		return
	}
	m[string(r.RowID)] = modelChange{ord: ord, op: r.Op, after: string(r.After)}
}

// mirrorRow is a mirror row as read back.
type mirrorRow struct {
	source  string
	entry   uint64
	eventMs int64
	op      string
	extra   *string
	values  map[string]any // typed columns that are not null, JSON-decoded
}

// readMirror scans a mirror table (or one of its snapshots) with iceberg-go.
func readMirror(t *testing.T, tbl *table.Table, opts ...table.ScanOption) map[string]mirrorRow {
	t.Helper()
	_, it, err := tbl.Scan(opts...).ToArrowRecords(context.Background())
	if err != nil {
		t.Fatalf("scan mirror: %v", err)
	}
	out := make(map[string]mirrorRow)
	for rec, err := range it {
		if err != nil {
			t.Fatalf("scan mirror: %v", err)
		}
		var buf bytes.Buffer
		if err := array.RecordToJSON(rec, &buf); err != nil {
			t.Fatalf("record to JSON: %v", err)
		}
		rec.Release()
		sc := bufio.NewScanner(&buf)
		sc.Buffer(nil, 1<<24)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("decode row: %v", err)
			}
			r := mirrorRow{values: map[string]any{}}
			key, _ := m[mirrorColRowID].(string)
			r.source, _ = m[mirrorColSourceID].(string)
			r.op, _ = m[mirrorColOp].(string)
			if f, ok := m[mirrorColEntrySeq].(float64); ok {
				r.entry = uint64(f)
			}
			if s, ok := m[mirrorColEventTime].(string); ok {
				ts, err := time.Parse("2006-01-02 15:04:05.999999999Z", s)
				if err != nil {
					ts, err = time.Parse(time.RFC3339Nano, s)
				}
				if err != nil {
					t.Fatalf("event time %q: %v", s, err)
				}
				r.eventMs = ts.UnixMilli()
			}
			if s, ok := m[mirrorColExtra].(string); ok {
				r.extra = &s
			}
			for k, v := range m {
				if !mirrorSystemCols[k] && v != nil {
					r.values[k] = v
				}
			}
			if _, dup := out[key]; dup {
				t.Errorf("key %q appears twice in the mirror", key)
			}
			out[key] = r
		}
	}
	return out
}

// checkMirror compares a mirror with the model: keys, provenance and values.
func checkMirror(t *testing.T, got map[string]mirrorRow, want mirrorModel) {
	t.Helper()
	live := 0
	for key, ch := range want {
		if ch.op == codec.OpDelete {
			if _, ok := got[key]; ok {
				t.Errorf("key %q: deleted in the model, present in the mirror", key)
			}
			continue
		}
		live++
		r, ok := got[key]
		if !ok {
			t.Errorf("key %q: missing from the mirror", key)
			continue
		}
		if r.source != ch.ord.source || r.entry != ch.ord.entry || r.eventMs != int64(ch.ord.eventMs) || r.op != ch.op.String() {
			t.Errorf("key %q: mirror holds %s/%d@%d %s, model %s/%d@%d %s", key, r.source, r.entry, r.eventMs, r.op,
				ch.ord.source, ch.ord.entry, ch.ord.eventMs, ch.op)
		}
		var wantVals map[string]any
		if err := json.Unmarshal([]byte(ch.after), &wantVals); err != nil {
			t.Fatalf("model after %q: %v", ch.after, err)
		}
		maps.DeleteFunc(wantVals, func(_ string, v any) bool { return v == nil })
		if r.extra != nil {
			t.Errorf("key %q: unexpected _extra %q", key, *r.extra)
		}
		if !reflect.DeepEqual(r.values, wantVals) {
			t.Errorf("key %q: values %v, model %v", key, r.values, wantVals)
		}
	}
	if len(got) != live {
		t.Errorf("mirror has %d rows, model %d", len(got), live)
	}
}

// keyedFlush builds one flush of n random changes per source over keys
// row-0..row-(keys-1). Event times are the commit's base time plus jitter
// of up to 3 s, so changes of different sources (and commits) arrive out
// of event-time order.
type keyedGen struct {
	rng     *rand.Rand
	keys    int
	seq     map[string]uint64 // last entry sequence per source
	batch   map[string]uint64
	flushID uint64
}

func newKeyedGen(seed uint64, keys int) *keyedGen {
	return &keyedGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e37)), keys: keys, seq: map[string]uint64{}, batch: map[string]uint64{}}
}

func (g *keyedGen) row(i int) []byte {
	return fmt.Appendf(nil, `{"id":%d,"name":"user-%d","n":%d,"score":%d.25,"ok":%t,"addr":{"city":"City %d","zip":%d},"tags":["a","t%d"],"gone":null}`,
		i, g.rng.IntN(1000), g.rng.IntN(1<<40), g.rng.IntN(100), g.rng.IntN(2) == 0, g.rng.IntN(50), g.rng.IntN(99999), g.rng.IntN(9))
}

func (g *keyedGen) flush(tableName string, baseMs uint64, perSource int, sources ...string) *sink.Flush {
	g.flushID++
	f := &sink.Flush{ID: g.flushID, Reason: "test", Time: time.UnixMilli(int64(baseMs)), Watermarks: map[string]sink.Watermark{}}
	tb := sink.Table{Name: tableName}
	for _, src := range sources {
		g.batch[src]++
		for range perSource {
			g.seq[src]++
			k := g.rng.IntN(g.keys)
			e := codec.Entry{Sequence: g.seq[src], Timestamp: baseMs + uint64(g.rng.IntN(3000)), Table: []byte(tableName),
				RowID: fmt.Appendf(nil, "row-%d", k)}
			switch p := g.rng.IntN(10); {
			case p < 2:
				e.Op = codec.OpDelete
			case p < 4:
				e.Op, e.After = codec.OpInsert, g.row(k)
			default:
				e.Op, e.After = codec.OpUpdate, g.row(k)
			}
			tb.Rows = append(tb.Rows, sink.Row{SourceID: src, BatchSeq: g.batch[src], Entry: e})
			sink.MergeWatermark(f.Watermarks, src, sink.Watermark{BatchSeq: g.batch[src], EntrySeq: e.Sequence})
		}
	}
	f.Tables = []sink.Table{tb}
	return f
}

func applyFlush(m mirrorModel, f *sink.Flush) {
	for _, tb := range f.Tables {
		for _, r := range tb.Rows {
			m.apply(r.SourceID, r)
		}
	}
}

func mirrorOn(c *Config) { c.Mirror = true }

// TestMirrorMatchesModel commits randomized keyed changes of two sources,
// several staged flushes per commit, and after every commit reads the
// mirror back with iceberg-go: it must equal the model (winner per key by
// (event time, source, entry sequence), deletes removed, typed values).
func TestMirrorMatchesModel(t *testing.T) {
	commits := 25
	if v, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_MIRROR_COMMITS")); v > 0 {
		commits = v
	}
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorCompactDeleteFiles = 6; c.MirrorPartitionBuckets = 4 })
	g := newKeyedGen(uint64(time.Now().UnixNano()), 40)
	model := mirrorModel{}
	for i := range commits {
		var staged []sink.Staged
		for range 1 + i%3 {
			f := g.flush("users", 1_700_000_000_000+uint64(i)*1000, 15, "src-a", "src-b")
			st, err := s.Stage(ctx, f)
			if err != nil {
				t.Fatalf("commit %d: stage: %v", i, err)
			}
			staged = append(staged, st)
			applyFlush(model, f)
		}
		if _, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: uint64(i + 1), Reason: "test"}); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		tbl, err := s.LoadMirrorTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		checkMirror(t, readMirror(t, tbl), model)
		if t.Failed() {
			t.Fatalf("mirror differs from the model after commit %d", i)
		}
		if i%2 == 1 { // the background compaction, every other commit
			if err := s.CompactMirrors(ctx); err != nil {
				t.Fatalf("commit %d: compaction: %v", i, err)
			}
			tbl, err = s.LoadMirrorTable(ctx, "users")
			if err != nil {
				t.Fatal(err)
			}
			checkMirror(t, readMirror(t, tbl), model)
			if t.Failed() {
				t.Fatalf("mirror differs from the model after the compaction after commit %d", i)
			}
			if n := maxPartitionDeletes(t, tbl); n >= 6 {
				t.Errorf("commit %d: %d delete files in a partition after compaction, threshold 6", i, n)
			}
		}
	}
	tot := s.MirrorTotals()
	if tot.StaleChanges == 0 || tot.KeysDeleted == 0 || tot.Compactions == 0 {
		t.Errorf("the run did not exercise stale changes, deletes and compaction: %+v", tot)
	}
	if tot.ExtraRows != 0 {
		t.Errorf("%d rows went to _extra; every value fits", tot.ExtraRows)
	}
	// The changelog still holds every change.
	infos, err := s.Tables(ctx)
	if err != nil || len(infos) != 1 || infos[0].Rows != int64(g.seq["src-a"]+g.seq["src-b"]) {
		t.Errorf("changelog: %+v, %v", infos, err)
	}
}

// TestMirrorReplay: the state a crash between the changelog's commit and
// the mirror's leaves (changelog committed, mirror not) is repaired by
// staging the same batches again, and replaying a commit the mirror holds
// applies nothing twice.
func TestMirrorReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g := newKeyedGen(7, 20)
	f1 := g.flush("users", 1_700_000_000_000, 30, "src-a", "src-b")
	f2 := g.flush("users", 1_700_000_001_000, 30, "src-a", "src-b")
	model := mirrorModel{}
	applyFlush(model, f1)
	applyFlush(model, f2)

	// The changelog commits f1 with the mirror off: the mirror misses it.
	off := openTestSink(t, dir, nil)
	mustCommit(t, off, f1)
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTestSink(t, dir, mirrorOn)
	res := mustCommit(t, s, f1) // the restart's replay
	if res.RowsWritten != 0 || res.RowsSkipped != flushRows(f1) {
		t.Errorf("replayed changelog rows: %+v", res)
	}
	mustCommit(t, s, f2)
	tbl, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	snaps := len(tbl.Metadata().Snapshots())
	checkMirror(t, readMirror(t, tbl), model)

	// Replays of commits the mirror holds add no snapshot and change nothing.
	mustCommit(t, s, f1)
	mustCommit(t, s, f2)
	tbl, _ = s.LoadMirrorTable(ctx, "users")
	if got := len(tbl.Metadata().Snapshots()); got != snaps {
		t.Errorf("replay added %d mirror snapshots", got-snaps)
	}
	checkMirror(t, readMirror(t, tbl), model)

	// A mirror commit that fails after the changelog's is retried with the
	// same staged flush; the changelog is not written twice.
	var failing atomic.Bool
	var fails atomic.Int64
	dir2 := t.TempDir()
	s2 := openTestSink(t, dir2, func(c *Config) {
		c.Mirror = true
		c.WrapIO = func(fs icebergio.IO) icebergio.IO {
			return flakyIO{WriteFileIO: fs.(icebergio.WriteFileIO), failing: &failing, mode: "create", match: "cdc_current", fails: &fails}
		}
	})
	st, err := s2.Stage(ctx, f1)
	if err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	if _, err := s2.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: 1}); err == nil {
		t.Fatal("CommitStaged succeeded with the mirror's storage failing")
	}
	failing.Store(false)
	if _, err := s2.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: 1}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	m1 := mirrorModel{}
	applyFlush(m1, f1)
	tbl2, err := s2.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl2), m1)
	if infos, _ := s2.Tables(ctx); len(infos) != 1 || infos[0].Rows != flushRows(f1) {
		t.Errorf("changelog after the retry: %+v", infos)
	}
}

// TestMirrorStaleAcrossCommits: a change older than the row the mirror
// holds, arriving in a later commit (from another source, or after a
// delete), does not replace it; a restarted writer reloads the order from
// the table.
func TestMirrorStaleAcrossCommits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	row := func(src string, batch, seq, ts uint64, op codec.Op, after string) *sink.Flush {
		e := codec.Entry{Sequence: seq, Timestamp: ts, Op: op, Table: []byte("t"), RowID: []byte("k")}
		if after != "" {
			e.After = []byte(after)
		}
		return &sink.Flush{ID: batch, Time: time.Now(), Tables: []sink.Table{{Name: "t", Rows: []sink.Row{{SourceID: src, BatchSeq: batch, Entry: e}}}}}
	}
	s := openTestSink(t, dir, mirrorOn)
	mustCommit(t, s, row("b", 1, 1, 2000, codec.OpInsert, `{"v":2}`))
	mustCommit(t, s, row("a", 1, 1, 1000, codec.OpUpdate, `{"v":1}`)) // older: ignored
	tbl, _ := s.LoadMirrorTable(ctx, "t")
	if got := readMirror(t, tbl); got["k"].values["v"] != float64(2) {
		t.Fatalf("older change replaced the row: %+v", got)
	}
	// Same event time: the greater source id wins ("b" > "a").
	mustCommit(t, s, row("a", 2, 2, 2000, codec.OpUpdate, `{"v":3}`))
	tbl, _ = s.LoadMirrorTable(ctx, "t")
	if got := readMirror(t, tbl); got["k"].values["v"] != float64(2) {
		t.Fatalf("tie broken wrongly: %+v", got)
	}
	// A restarted writer loads the order from the table.
	s.Close()
	s = openTestSink(t, dir, mirrorOn)
	mustCommit(t, s, row("a", 3, 3, 1500, codec.OpDelete, ""))
	tbl, _ = s.LoadMirrorTable(ctx, "t")
	if got := readMirror(t, tbl); got["k"].values["v"] != float64(2) {
		t.Fatalf("older delete after restart removed the row: %+v", got)
	}
	mustCommit(t, s, row("a", 4, 4, 3000, codec.OpDelete, ""))
	mustCommit(t, s, row("b", 2, 2, 2500, codec.OpInsert, `{"v":9}`)) // older than the delete
	tbl, _ = s.LoadMirrorTable(ctx, "t")
	if got := readMirror(t, tbl); len(got) != 0 {
		t.Fatalf("a change older than the delete resurrected the row: %+v", got)
	}
	if st := s.MirrorTotals().StaleChanges; st != 2 { // counted since the restart
		t.Errorf("stale changes: %d, want 2", st)
	}
}

// TestMirrorCompactionBounded: under a steady update load, with the
// background compaction running, the delete files of each partition stay
// within the threshold plus the commits made while a compaction pass ran,
// no commit compacts, and the contents stay the model's.
func TestMirrorCompactionBounded(t *testing.T) {
	ctx := context.Background()
	const threshold = 4
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Mirror = true
		c.MirrorCompactDeleteFiles = threshold
		c.MirrorPartitionBuckets = 4
	})
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.RunMirrorCompaction(cctx) }()
	defer func() { stop(); <-done }()
	g := newKeyedGen(11, 30)
	model := mirrorModel{}
	maxDel := 0
	for i := range 24 {
		f := g.flush("items", 1_700_000_000_000+uint64(i)*5000, 20, "src-a")
		applyFlush(model, f)
		res := mustCommit(t, s, f)
		if len(res.Commits) != 2 {
			t.Fatalf("commit %d: %+v, want the changelog's and the mirror's", i, res.Commits)
		}
		tbl, err := s.LoadMirrorTable(ctx, "items")
		if err != nil {
			t.Fatal(err)
		}
		maxDel = max(maxDel, maxPartitionDeletes(t, tbl))
		checkMirror(t, readMirror(t, tbl), model)
		if t.Failed() {
			t.Fatalf("after commit %d", i)
		}
		time.Sleep(20 * time.Millisecond) // a steady load, not a burst
	}
	// Slack: the commits made while a pass compacted.
	if maxDel > threshold+2 {
		t.Errorf("up to %d delete files in a partition; the threshold is %d", maxDel, threshold)
	}
	tot := s.MirrorTotals()
	if tot.Compactions < 4 || tot.DeleteFilesRemoved == 0 {
		t.Errorf("compactions: %+v", tot)
	}
	// Maintenance (as `lakehouse maintain` runs it) compacts what is left
	// and expires snapshots.
	stop()
	<-done
	if err := s.Maintain(ctx, MaintainOptions{MirrorDeletes: true}); err != nil {
		t.Fatal(err)
	}
	tbl, _ := s.LoadMirrorTable(ctx, "items")
	if n := mirrorDeleteFiles(tbl); n != 0 {
		t.Errorf("%d delete files after maintenance", n)
	}
	checkMirror(t, readMirror(t, tbl), model)
}

// maxPartitionDeletes is the largest number of delete files in one
// partition of the mirror.
func maxPartitionDeletes(t *testing.T, tbl *table.Table) int {
	t.Helper()
	parts, _, err := mirrorPartitions(context.Background(), tbl)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range parts {
		n = max(n, p.deleteFiles)
	}
	return n
}

func oneRowFlush(id uint64, tableName, key, after string) *sink.Flush {
	e := codec.Entry{Sequence: id, Timestamp: 1_700_000_000_000 + id, Op: codec.OpInsert, Table: []byte(tableName),
		RowID: []byte(key), After: []byte(after)}
	return &sink.Flush{ID: id, Time: time.Now(), Tables: []sink.Table{{Name: tableName, Rows: []sink.Row{{SourceID: "src", BatchSeq: id, Entry: e}}}}}
}

func fieldIDs(tbl *table.Table) map[string]int {
	out := map[string]int{}
	for _, f := range tbl.Schema().Fields() {
		out[f.Name] = f.ID
	}
	return out
}

// TestMirrorSchemaEvolution: new keys become new (nested) columns with
// stable field ids, a value that does not fit its column sends the whole
// row to _extra, int and float columns widen, and old snapshots stay
// readable.
func TestMirrorSchemaEvolution(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	mustCommit(t, s, oneRowFlush(1, "t", "k1", `{"a":1,"s":{"x":1}}`))
	tbl, _ := s.LoadMirrorTable(ctx, "t")
	snap1 := tbl.CurrentSnapshot().SnapshotID
	ids1 := fieldIDs(tbl)

	mustCommit(t, s, oneRowFlush(2, "t", "k2", `{"a":2,"b":"x","s":{"x":2,"y":"z"}}`))
	mustCommit(t, s, oneRowFlush(3, "t", "k3", `{"a":"not a number","b":"y"}`))
	mustCommit(t, s, oneRowFlush(4, "t", "k4", `{"_op":"hack","c":true}`))
	mustCommit(t, s, oneRowFlush(5, "t", "k5", `{"a":1.5,"d":[],"e":null}`))
	tbl, _ = s.LoadMirrorTable(ctx, "t")
	ids := fieldIDs(tbl)
	for name, id := range ids1 {
		if ids[name] != id {
			t.Errorf("field %q: id %d became %d", name, id, ids[name])
		}
	}
	for _, name := range []string{"b", "c"} {
		if ids[name] == 0 {
			t.Errorf("no column %q: %v", name, ids)
		}
	}
	if _, ok := ids["d"]; ok {
		t.Errorf("an empty array created column d")
	}
	st, ok := tbl.Schema().FindFieldByName("s.y")
	if !ok || st.Type.String() != "string" {
		t.Errorf("nested field s.y: %v %v", st, ok)
	}
	got := readMirror(t, tbl)
	want := map[string]map[string]any{
		"k1": {"a": float64(1), "s": map[string]any{"x": float64(1), "y": nil}},
		"k2": {"a": float64(2), "b": "x", "s": map[string]any{"x": float64(2), "y": "z"}},
		"k3": {"b": "y"},
		"k4": {"c": true},
		"k5": {},
	}
	for k, w := range want {
		if !reflect.DeepEqual(got[k].values, w) {
			t.Errorf("%s: values %v, want %v", k, got[k].values, w)
		}
	}
	for k, extra := range map[string]string{"k3": `{"a":"not a number","b":"y"}`, "k4": `{"_op":"hack","c":true}`, "k5": `{"a":1.5,"d":[],"e":null}`} {
		if got[k].extra == nil || *got[k].extra != extra {
			t.Errorf("%s: _extra %v, want %s", k, got[k].extra, extra)
		}
	}
	if got["k1"].extra != nil || got["k2"].extra != nil {
		t.Errorf("rows that fit have _extra")
	}
	if n := s.MirrorTotals().ExtraRows; n != 3 {
		t.Errorf("extra rows counted: %d, want 3", n)
	}

	// The first snapshot still reads with the columns it had.
	old := readMirror(t, tbl, table.WithSnapshotID(snap1))
	if len(old) != 1 || !reflect.DeepEqual(old["k1"].values, map[string]any{"a": float64(1), "s": map[string]any{"x": float64(1)}}) {
		t.Errorf("snapshot 1 reads %+v", old)
	}
}

// TestMirrorWidening: int and float columns (from a pinned or older
// schema) are widened to long and double when a value needs it; a long
// column takes integers into a double column.
func TestMirrorWidening(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	// Create the mirror with narrow columns, as a pinned schema would.
	tbl, err := s.loadOrCreateMirror(ctx, "w", nil)
	if err != nil {
		t.Fatal(err)
	}
	txn := tbl.NewTransaction()
	u := txn.UpdateSchema(true, false)
	u.AddColumn([]string{"i"}, iceberg.PrimitiveTypes.Int32, "", false, nil)
	u.AddColumn([]string{"f"}, iceberg.PrimitiveTypes.Float32, "", false, nil)
	u.AddColumn([]string{"d"}, iceberg.PrimitiveTypes.Float64, "", false, nil)
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, s, oneRowFlush(1, "w", "k1", `{"i":7,"f":0.5,"d":3}`))
	tbl, _ = s.LoadMirrorTable(ctx, "w")
	if f, _ := tbl.Schema().FindFieldByName("i"); f.Type.String() != "int" {
		t.Fatalf("i widened early: %s", f.Type)
	}
	ids := fieldIDs(tbl)
	mustCommit(t, s, oneRowFlush(2, "w", "k2", `{"i":5000000000,"f":0.1,"d":4}`))
	tbl, _ = s.LoadMirrorTable(ctx, "w")
	for name, typ := range map[string]string{"i": "long", "f": "double", "d": "double"} {
		f, _ := tbl.Schema().FindFieldByName(name)
		if f.Type.String() != typ || f.ID != ids[name] {
			t.Errorf("%s: %s (id %d), want %s (id %d)", name, f.Type, f.ID, typ, ids[name])
		}
	}
	got := readMirror(t, tbl)
	if !reflect.DeepEqual(got["k2"].values, map[string]any{"i": float64(5000000000), "f": 0.1, "d": float64(4)}) || got["k2"].extra != nil {
		t.Errorf("k2: %+v", got["k2"])
	}
	if !reflect.DeepEqual(got["k1"].values, map[string]any{"i": float64(7), "f": 0.5, "d": float64(3)}) {
		t.Errorf("k1 after widening: %+v", got["k1"])
	}
}

// TestMirrorNestedAsJSON: with nested inference off, objects and arrays
// are JSON text columns.
func TestMirrorNestedAsJSON(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true; c.MirrorNestedAsJSON = true })
	mustCommit(t, s, oneRowFlush(1, "t", "k1", `{"s":{"x":1},"l":[1,"a"],"n":2}`))
	tbl, _ := s.LoadMirrorTable(ctx, "t")
	got := readMirror(t, tbl)
	want := map[string]any{"s": `{"x":1}`, "l": `[1,"a"]`, "n": float64(2)}
	if !reflect.DeepEqual(got["k1"].values, want) || got["k1"].extra != nil {
		t.Errorf("k1: %+v, want %v", got["k1"], want)
	}
}
