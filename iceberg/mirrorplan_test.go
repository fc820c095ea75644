package iceberg

import (
	"context"
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
			tbl, err := s.loadOrCreateMirror(ctx, fmt.Sprintf("t%d", round))
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
