package iceberg

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestMirrorPlanFromMisfits: the schema plan of only the rows that did not
// fit the record (what a commit plans from) equals the plan of every row,
// for random rows (nested, conflicting, broken) against schemas evolved
// from random earlier rows, with each typing option.
func TestMirrorPlanFromMisfits(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	planString := func(p *schemaPlan) string {
		var b strings.Builder
		for _, c := range append(append([]planChange{}, p.adds...), p.widens...) {
			fmt.Fprintf(&b, "%s:%s;", strings.Join(c.path, "."), c.typ)
		}
		return b.String()
	}
	for _, ty := range []mirrorTyping{{}, {timestamps: true}, {nestedAsJSON: true}} {
		s := openTestSink(t, t.TempDir(), func(c *Config) {
			c.Mirror, c.MirrorNestedAsJSON, c.MirrorInferTimestamps = true, ty.nestedAsJSON, ty.timestamps
		})
		for round := range 15 {
			rows := make([]*mirrorChange, 2+rng.IntN(40))
			for i := range rows {
				rows[i] = &mirrorChange{key: fmt.Sprint(i), after: randomJSON(rng, 0, true)}
			}
			tbl, err := s.loadOrCreateMirror(ctx, fmt.Sprintf("t%d", round), nil)
			if err != nil {
				t.Fatal(err)
			}
			var earlier []map[string]any
			dec := newAfterDecoder()
			for _, r := range rows[:rng.IntN(len(rows))] {
				if m, ok := dec.parse(r.after); ok {
					earlier = append(earlier, m)
				}
			}
			if tbl, err = s.evolveMirrorSchema(ctx, tbl, MirrorTableSchema{}, earlier); err != nil {
				t.Fatal(err)
			}
			all := newSchemaPlan(tbl.Schema(), ty)
			for _, r := range rows {
				if m, ok := dec.parse(r.after); ok {
					all.observeRow(m)
				}
			}
			_, _, misfits, err := buildMirrorRecord(ctx, tbl.Schema(), rows, ty, MirrorTableSchema{})
			if err != nil {
				t.Fatal(err)
			}
			some := newSchemaPlan(tbl.Schema(), ty)
			for _, m := range misfits {
				some.observeRow(m)
			}
			if a, b := planString(all), planString(some); a != b {
				t.Fatalf("typing %+v round %d: plan of all rows %q, of the misfits %q", ty, round, a, b)
			}
		}
	}
}

// TestMirrorSchemaCommitRacedIsDecidedAgain: two writers evolve one
// mirror's schema at once (instances committing directly). The one whose
// table was loaded before the other's schema commit is refused by the
// catalog; that refusal is errMirrorMoved, which commitMirror decides
// again on the table as it is now, not a failed flush. It was a plain
// error ("Requirement failed: current schema id has changed"), and
// TestScaleOutMirrorDirectCommits' manual flush failed on it.
func TestMirrorSchemaCommitRacedIsDecidedAgain(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), func(c *Config) { c.Mirror = true })
	stale, err := s.loadOrCreateMirror(ctx, "users", nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.evolveMirrorSchema(ctx, fresh, MirrorTableSchema{}, []map[string]any{{"a": "x"}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.evolveMirrorSchema(ctx, stale, MirrorTableSchema{}, []map[string]any{{"b": "y"}})
	if !errors.Is(err, errMirrorMoved) {
		t.Fatalf("schema commit on a table changed since it was loaded: %v, want errMirrorMoved", err)
	}
	// Decided again on the table as it is now, both columns are there.
	now, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.evolveMirrorSchema(ctx, now, MirrorTableSchema{}, []map[string]any{{"b": "y"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadMirrorTable(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"a", "b"} {
		if _, ok := got.Schema().FindFieldByName(col); !ok {
			t.Errorf("mirror schema has no column %s: %s", col, got.Schema())
		}
	}
}
