package iceberg

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/dot-do/lakehouse-rpc/sink"
)

var errCrash = errors.New("crash")

// TestMirrorCrashBetweenCommits crashes the writer deterministically
// between the changelog's transaction and the mirror's (the
// BeforeMirrorCommit hook fails after the mirror's files are written), at
// several points of a randomized keyed run over two tables. The crashed
// Sink is abandoned; a new one (the restart) replays every flush not
// acknowledged, as the server does from its write-ahead log, together with
// the next one. After each restart and at the end: the mirror equals the
// model, its watermarks are the changelog's, the changelog holds every
// change exactly once, and replaying acknowledged flushes adds no snapshot.
func TestMirrorCrashBetweenCommits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g := newKeyedGen(21, 25)
	models := map[string]mirrorModel{"orders": {}, "users": {}}
	crashAt := map[int]string{3: "users", 6: "orders", 7: "users", 11: "users"} // commit -> the table whose mirror commit fails
	open := func(crash func(string) error) *Sink {
		return openTestSink(t, dir, func(c *Config) { c.Mirror = true; c.BeforeMirrorCommit = crash })
	}
	var (
		s       = open(nil)
		pending []*sink.Flush // flushes not acknowledged: the log's replay
		total   int64
		id      uint64
		crashes int
	)
	for i := range 14 {
		// One flush of both tables, deletes included.
		fu := g.flush("users", 1_700_000_000_000+uint64(i)*1000, 12, "src-a", "src-b")
		fo := g.flush("orders", 1_700_000_000_000+uint64(i)*1000, 12, "src-a", "src-b")
		fu.Tables = append(fu.Tables, fo.Tables...)
		for src, w := range fo.Watermarks {
			sink.MergeWatermark(fu.Watermarks, src, w)
		}
		applyFlush(models["users"], &sink.Flush{Tables: fu.Tables[:1]})
		applyFlush(models["orders"], &sink.Flush{Tables: fu.Tables[1:]})
		total += flushRows(fu)
		pending = append(pending, fu)

		if victim, ok := crashAt[i]; ok {
			crashed := false
			s.cfg.BeforeMirrorCommit = func(name string) error {
				if name == victim {
					crashed = true
					return errCrash
				}
				return nil
			}
			var staged []sink.Staged
			for _, f := range pending {
				st, err := s.Stage(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				staged = append(staged, st)
			}
			id++
			if _, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: id}); !errors.Is(err, errCrash) || !crashed {
				t.Fatalf("commit %d: %v, want the crash of %s's mirror commit", i, err, victim)
			}
			crashes++
			// The crash: the Sink is abandoned (not closed) and a new one
			// starts on the same catalog; nothing was acknowledged.
			s = open(nil)
			continue
		}
		var staged []sink.Staged
		for _, f := range pending {
			st, err := s.Stage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			staged = append(staged, st)
		}
		id++
		if _, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: id}); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		acked := pending
		pending = nil
		checkMirrorState(t, s, []string{"orders", "users"}, models, total)
		if t.Failed() {
			t.Fatalf("after commit %d (%d crashes)", i, crashes)
		}
		// A replay of what was acknowledged applies nothing.
		snaps := mirrorSnapshots(t, s, "orders", "users")
		for _, f := range acked {
			mustCommit(t, s, f)
		}
		if got := mirrorSnapshots(t, s, "orders", "users"); !reflect.DeepEqual(got, snaps) {
			t.Fatalf("after commit %d: replaying acknowledged flushes added mirror snapshots: %v -> %v", i, snaps, got)
		}
	}
	if crashes != len(crashAt) {
		t.Fatalf("%d crashes, want %d", crashes, len(crashAt))
	}
}

// mirrorSnapshots counts the snapshots of the named tables' mirrors.
func mirrorSnapshots(t *testing.T, s *Sink, names ...string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, name := range names {
		tbl, err := s.LoadMirrorTable(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = len(tbl.Metadata().Snapshots())
	}
	return out
}

// checkMirrorState checks that the sink holds exactly the tables names
// (sorted), each mirror equal to its model and at its changelog's
// watermarks, and that the changelogs hold total rows: no change written
// twice or lost.
func checkMirrorState(t *testing.T, s *Sink, names []string, models map[string]mirrorModel, total int64) {
	t.Helper()
	ctx := context.Background()
	infos, err := s.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rows int64
	var got []string
	for _, in := range infos {
		rows += in.Rows
		got = append(got, in.Name)
		tbl, err := s.LoadMirrorTable(ctx, in.OriginalName)
		if err != nil {
			t.Fatal(err)
		}
		checkMirror(t, readMirror(t, tbl), models[in.OriginalName])
		mw, err := watermarksFromProps(tbl.Properties())
		if err != nil || !reflect.DeepEqual(mw, in.Watermarks) {
			t.Errorf("%s: mirror watermarks %v (%v), changelog's %v", in.Name, mw, err, in.Watermarks)
		}
	}
	if !reflect.DeepEqual(got, names) {
		t.Errorf("tables %v, want %v", got, names)
	}
	if rows != total {
		t.Errorf("changelogs hold %d rows, %d changes made: a change was written twice or lost", rows, total)
	}
}
