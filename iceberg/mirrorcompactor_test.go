package iceberg

import (
	"slices"
	"testing"
)

// TestMirrorCompactorResumesWherePutOff: a round that a commit pass stops
// puts back the tables it did not reach, and the next round starts with
// them. Before, each round took the tables in name order: with passes close
// together the rounds reached the first tables only, and the last one's
// delete files grew (integration TestMirrorKill9 found a partition at 6,
// with compaction at 2).
func TestMirrorCompactorResumesWherePutOff(t *testing.T) {
	var (
		c      mirrorCompactor
		passes commitPasses
	)
	passes.init(c.passesEnded)
	c.init(&passes)
	for _, n := range []string{"products", "customers", "orders"} {
		c.note(n)
	}
	names := c.take()
	if want := []string{"customers", "orders", "products"}; !slices.Equal(names, want) {
		t.Fatalf("first round %v, want name order %v", names, want)
	}
	// The round compacted customers, then a pass started.
	c.putOff(names[1:])
	c.note("customers") // a mirror commit of the pass
	if got, want := c.take(), []string{"orders", "products", "customers"}; !slices.Equal(got, want) {
		t.Errorf("round after a put-off %v, want %v", got, want)
	}
	// With nothing put off, name order again.
	c.note("products")
	c.note("customers")
	if got, want := c.take(), []string{"customers", "products"}; !slices.Equal(got, want) {
		t.Errorf("next round %v, want %v", got, want)
	}
}
