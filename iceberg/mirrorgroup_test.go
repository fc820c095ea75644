package iceberg

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// winnersOf is mergeMirrorParts' result by key.
func winnersOf(t *testing.T, parts []*mirrorPart) map[string]mirrorChange {
	t.Helper()
	out := make(map[string]mirrorChange)
	for _, ch := range mergeMirrorParts(parts) {
		if _, dup := out[ch.key]; dup {
			t.Fatalf("key %q won twice", ch.key)
		}
		out[ch.key] = *ch
	}
	return out
}

// TestMirrorGroupKeepsTheWinners: parts folded into a group as they are
// staged give the commit the same winners, `after` texts included, as the
// parts kept whole; the group holds one change per key, and no part keeps
// more dropped changes than live ones.
func TestMirrorGroupKeepsTheWinners(t *testing.T) {
	rng := rand.New(rand.NewPCG(46, 46))
	for round := range 200 {
		var whole, grouped []*mirrorPart
		g := newMirrorGroup()
		for range 1 + rng.IntN(8) {
			tbl, _ := randomFoldTable(rng, 1+rng.IntN(300))
			p := foldMirror(tbl, nil, nil)
			whole = append(whole, p)
			q := foldMirror(tbl, nil, nil)
			grouped = append(grouped, q)
			g.add(q, nil)
			for i, p := range g.parts {
				if 2*p.dropped > len(p.changes) {
					t.Fatalf("round %d: part %d keeps %d dropped changes of %d", round, i, p.dropped, len(p.changes))
				}
			}
		}
		want := winnersOf(t, whole)
		got := winnersOf(t, grouped)
		if len(got) != len(want) {
			t.Fatalf("round %d: %d winners, want %d", round, len(got), len(want))
		}
		for k, w := range want {
			if c := got[k]; c != w {
				t.Fatalf("round %d: key %q: %+v, want %+v", round, k, c, w)
			}
		}
		if n := g.changes(); n != len(want) {
			t.Fatalf("round %d: the group holds %d changes for %d keys", round, n, len(want))
		}
	}
}

// TestMirrorGroupBoundsStagedChanges: flushes staged between two commits
// that change the same keys hold about one change per key between them,
// not one per key and flush, and their commit gives the mirror the state
// the model says.
func TestMirrorGroupBoundsStagedChanges(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	g := newKeyedGen(uint64(time.Now().UnixNano()), 50)
	model := mirrorModel{}
	for c := range 3 {
		var sets []sink.Staged
		for i := range 12 {
			f := g.flush("users", 1_700_000_000_000+uint64(c*12+i)*1000, 200, "src-a", "src-b")
			st, err := s.Stage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			sets = append(sets, st)
			applyFlush(model, f)
		}
		held := 0
		for _, st := range sets {
			for _, p := range st.(*staged).tables {
				if p.mirror != nil {
					held += len(p.mirror.changes)
				}
			}
		}
		// At most 50 live changes, and as many dropped ones in one part
		// before it is compacted.
		if held > 100 {
			t.Fatalf("commit %d: 12 staged flushes over 50 keys hold %d changes", c, held)
		}
		if _, err := s.CommitStaged(ctx, sets, sink.CommitInfo{ID: uint64(c + 1), Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		tbl, err := s.LoadMirrorTable(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		checkMirror(t, readMirror(t, tbl), model)
	}
}

// TestCommitStagedRefusesPartOfAGroup: a commit given some of the flushes
// whose mirror changes were folded together commits nothing; given all of
// them it commits them.
func TestCommitStagedRefusesPartOfAGroup(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), mirrorOn)
	g := newKeyedGen(7, 20)
	model := mirrorModel{}
	var staged []sink.Staged
	for i := range 3 {
		f := g.flush("users", 1_700_000_000_000+uint64(i)*1000, 40, "src-a")
		st, err := s.Stage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		staged = append(staged, st)
		applyFlush(model, f)
	}
	_, err := s.CommitStaged(ctx, staged[:2], sink.CommitInfo{ID: 1, Reason: "test"})
	if err == nil || !strings.Contains(err.Error(), "folded across 3 staged flushes and 2 of them are given") {
		t.Fatalf("commit of 2 of 3 grouped flushes: %v", err)
	}
	if tbl, err := s.LoadTable(ctx, "users"); err == nil && tbl.CurrentSnapshot() != nil {
		t.Fatal("the refused commit committed the changelog")
	}
	if _, err := s.CommitStaged(ctx, staged, sink.CommitInfo{ID: 2, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	tbl, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	checkMirror(t, readMirror(t, tbl), model)
}
