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
	c.init(&passes, DefaultMirrorCompactDeleteFiles, DefaultMirrorScanBudget)
	for _, n := range []string{"products", "customers", "orders"} {
		c.note(n, mirrorGrowth{})
	}
	names := c.take()
	if want := []string{"customers", "orders", "products"}; !slices.Equal(names, want) {
		t.Fatalf("first round %v, want name order %v", names, want)
	}
	// The round compacted customers, then a pass started.
	c.putOff(names[1:])
	c.note("customers", mirrorGrowth{}) // a mirror commit of the pass
	if got, want := c.take(), []string{"orders", "products", "customers"}; !slices.Equal(got, want) {
		t.Errorf("round after a put-off %v, want %v", got, want)
	}
	// With nothing put off, name order again.
	c.note("products", mirrorGrowth{})
	c.note("customers", mirrorGrowth{})
	if got, want := c.take(), []string{"customers", "products"}; !slices.Equal(got, want) {
		t.Errorf("next round %v, want %v", got, want)
	}
}

// TestMirrorCompactorHeadroom: after a check that found nothing due, a
// mirror commit on the measured snapshot queues its table only once the
// growth it reports could have made a partition due (by delete files or
// scan cost); a commit on another snapshot, with another spec or with no
// growth known, queues it at once.
func TestMirrorCompactorHeadroom(t *testing.T) {
	var (
		c      mirrorCompactor
		passes commitPasses
	)
	passes.init(c.passesEnded)
	c.init(&passes, 16, 1000)
	pending := func(name string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.pending[name]
		return ok
	}
	// measure records a check at snap whose fullest partitions had dels
	// delete files, data data files, and the scan cost cost.
	measure := func(name string, snap int64, dels, data int, cost int64) {
		c.take()
		c.measured(name, mirrorHeadroom{snapshot: snap, deleteFiles: dels, dataFiles: data, scanCost: cost}, true)
	}
	grow := func(parent, snap int64, dels int, rows int64, data int) mirrorGrowth {
		return mirrorGrowth{snapshot: snap, parent: parent, deleteFiles: dels, deleteRows: rows, dataFiles: data}
	}

	// Delete files: 10 in the fullest partition, 16 due; 1 a commit.
	measure("t", 100, 10, 1, 0)
	for i := int64(0); i < 5; i++ {
		if c.note("t", grow(100+i, 101+i, 1, 1, 0)); pending("t") {
			t.Fatalf("queued after %d commits of one delete file: 15 of 16 at most", i+1)
		}
	}
	if c.note("t", grow(105, 106, 1, 1, 0)); !pending("t") {
		t.Fatal("not queued after the commit that could make 16 delete files")
	}

	// Scan cost: 4 data files, cost 600 of 1000; 40 delete rows over a
	// data file's commit: after 2 commits at most 600+80*(4+2) = 1080.
	measure("t", 200, 1, 4, 600)
	if c.note("t", grow(200, 201, 1, 40, 1)); pending("t") {
		t.Fatal("queued at a scan cost of at most 600+40*5 = 800")
	}
	if c.note("t", grow(201, 202, 1, 40, 1)); !pending("t") {
		t.Fatal("not queued at a scan cost that may reach 1080")
	}

	// Another writer's commit came between: measured again.
	measure("t", 300, 1, 1, 0)
	if c.note("t", grow(299, 301, 1, 1, 0)); !pending("t") {
		t.Error("a commit on a snapshot the headroom does not know was not queued")
	}
	measure("t", 400, 1, 1, 0)
	if c.note("t", mirrorGrowth{}); !pending("t") {
		t.Error("a commit without its growth was not queued")
	}
	measure("t", 500, 1, 1, 0)
	g := grow(500, 501, 1, 1, 0)
	g.specID = 1
	if c.note("t", g); !pending("t") {
		t.Error("a commit with another partition spec was not queued")
	}
	// A table never measured is queued.
	if c.note("u", grow(1, 2, 1, 1, 0)); !pending("u") {
		t.Error("a table never checked was not queued")
	}
}
