package iceberg

import (
	"context"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestMirrorExclude: a table that Config.MirrorExclude names (here by a
// pattern) keeps its changelog but gets no mirror table, while the other
// tables' mirrors are written as usual; a table excluded after its mirror
// was written leaves that mirror as it was.
func TestMirrorExclude(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTestSink(t, dir, func(c *Config) { c.Mirror = true; c.MirrorExclude = []string{"log_*"} })
	g := newKeyedGen(7, 40)
	model := mirrorModel{}
	changelog := map[string]int64{}
	for i := range 3 {
		users := g.flush("users", 1_700_000_000_000+uint64(i)*1000, 20, "src-a")
		logs := g.flush("log_events", 1_700_000_000_000+uint64(i)*1000, 20, "src-l")
		var staged []sink.Staged
		for _, f := range []*sink.Flush{users, logs} {
			st, err := s.Stage(ctx, f)
			if err != nil {
				t.Fatalf("round %d: stage: %v", i, err)
			}
			staged = append(staged, st)
			changelog[f.Tables[0].Name] += int64(len(f.Tables[0].Rows))
		}
		applyFlush(model, users)
		if _, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: uint64(i + 1), Reason: "test"}); err != nil {
			t.Fatalf("round %d: commit: %v", i, err)
		}
	}
	tbl, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
	if _, err := s.LoadMirrorTable(ctx, "log_events"); !mirrorMissing(err) {
		t.Errorf("log_events, excluded by log_*: its mirror table loads (err %v), want none", err)
	}
	infos, err := s.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if want := changelog[in.OriginalName]; in.Rows != want {
			t.Errorf("changelog %s: %d rows, want %d", in.OriginalName, in.Rows, want)
		}
	}
	if len(infos) != 2 {
		t.Errorf("%d changelog tables, want users and log_events", len(infos))
	}
	s.Close()

	// Excluding users now leaves its mirror as the last commit left it.
	s = openTestSink(t, dir, func(c *Config) { c.Mirror = true; c.MirrorExclude = []string{"users", "log_*"} })
	f := g.flush("users", 1_700_000_010_000, 20, "src-a")
	st, err := s.Stage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: 9, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if tbl, err = s.LoadMirrorTable(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}

// TestMirrorExcludeValidated: an exclusion that is no pattern is refused
// when the sink opens, naming it.
func TestMirrorExcludeValidated(t *testing.T) {
	for _, bad := range []string{"[a-", ""} {
		_, err := Open(context.Background(), Config{DataDir: t.TempDir(), Mirror: true, MirrorExclude: []string{"users", bad}})
		if err == nil || !strings.Contains(err.Error(), "mirror exclusion \""+bad+"\"") {
			t.Errorf("exclusion %q: %v, want a refusal naming it", bad, err)
		}
	}
}
