package offheap

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

const (
	testFloor   = 208 << 20
	testCeiling = 512 << 20
)

// feed runs n readings of the collector's share (of one CPU-second each)
// through g and returns the limits it gave.
func feed(g *governor, share float64, n int) []int64 {
	var limits []int64
	for range n {
		limits = append(limits, g.step(share, 1))
	}
	return limits
}

// The limit stays at the floor under moderate load, and through a
// maintenance pass's seconds of collections (measured at 100,000 W1
// entries/s: 3-5% of the CPU, 15-27% for 10-20 s during a pass; here 40 s of
// them, every 3 minutes).
func TestGovernorHoldsTheFloorThroughAPass(t *testing.T) {
	g := newGovernor(testFloor, testCeiling)
	for round := range 5 {
		for _, l := range append(append(feed(g, 0.04, 70), feed(g, 0.27, 10)...), feed(g, 0.16, 10)...) {
			if l != testFloor {
				t.Fatalf("round %d: the limit moved to %d MiB (average share %.3f)", round, l>>20, g.share)
			}
		}
	}
}

// Sustained collections (saturation: 25% of the CPU at the floor) raise the
// limit to the ceiling in quarters, each governRaiseGap readings or more
// apart; once the collector is cheap again it comes back to the floor in
// sixteenths, each after governLowerAfter cheap readings.
func TestGovernorRisesUnderSustainedLoadAndComesBack(t *testing.T) {
	g := newGovernor(testFloor, testCeiling)
	limits := feed(g, 0.30, 60)
	if limits[0] != testFloor {
		t.Fatalf("one costly reading raised the limit to %d MiB", limits[0]>>20)
	}
	if last := limits[len(limits)-1]; last != testCeiling {
		t.Fatalf("after 2 minutes at 30%%: limit %d MiB, want the ceiling", last>>20)
	}
	raises, lastRaise := 0, -governRaiseGap
	for i := 1; i < len(limits); i++ {
		if limits[i] == limits[i-1] {
			continue
		}
		if d := limits[i] - limits[i-1]; d != (testCeiling-testFloor)/governRaiseParts {
			t.Fatalf("reading %d: raised by %d MiB", i, d>>20)
		}
		if i-lastRaise < governRaiseGap {
			t.Fatalf("raises at readings %d and %d: closer than %d", lastRaise, i, governRaiseGap)
		}
		raises, lastRaise = raises+1, i
	}
	if raises != governRaiseParts {
		t.Fatalf("%d raises, want %d", raises, governRaiseParts)
	}
	// Between the two shares the limit holds.
	for _, l := range feed(g, 0.10, 200) {
		if l != testCeiling {
			t.Fatalf("at 10%% the limit moved to %d MiB", l>>20)
		}
	}
	down := feed(g, 0.01, governLowerAfter*(governLowerParts+8))
	if last := down[len(down)-1]; last != testFloor {
		t.Fatalf("cheap collections for %d readings: limit %d MiB, want the floor", len(down), last>>20)
	}
	for i := 1; i < len(down); i++ {
		if d := down[i-1] - down[i]; d != 0 && d != (testCeiling-testFloor)/governLowerParts {
			t.Fatalf("reading %d: lowered by %d MiB", i, d>>20)
		}
	}
}

// A burst (the collector at the runtime's cap of half the CPU, as when an
// idle server takes millions of entries at once) takes the limit to the
// ceiling within three readings, not the minute the average needs; it then
// comes down as after sustained load.
func TestGovernorBurstGoesToTheCeiling(t *testing.T) {
	g := newGovernor(testFloor, testCeiling)
	feed(g, 0.04, 60)
	limits := feed(g, 0.5, 3)
	if limits[len(limits)-1] != testCeiling {
		t.Fatalf("three readings at 50%%: limits %v, want the ceiling", limits)
	}
	down := feed(g, 0.01, governLowerAfter*(governLowerParts+8))
	if last := down[len(down)-1]; last != testFloor {
		t.Fatalf("after the burst: limit %d MiB, want the floor back", last>>20)
	}
}

// A reading with no CPU used (an idle process, whose counters move at
// collections) counts as cheap; one over 100% (counters of different
// moments) counts as 100%.
func TestGovernorOddReadings(t *testing.T) {
	g := newGovernor(testFloor, testCeiling)
	g.step(0, 0)
	g.step(3, 1)
	if g.share > governAlpha+1e-9 || g.share <= 0 {
		t.Fatalf("average share %.4f after an empty and a 300%% reading", g.share)
	}
}

// Govern sets the process's limit to the floor, shares it with the mapped
// bytes as the Budget does, and sets the ceiling back when it ends. A
// Budget without a limit, or a floor not below it, is left alone.
func TestBudgetGovernSetsTheFloorAndRestores(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	debug.SetMemoryLimit(testCeiling)
	b := NewBudget(testCeiling)
	a := New(b)
	buf := a.Allocate(64 << 20)
	if got := debug.SetMemoryLimit(-1); got != testCeiling-64<<20 {
		t.Fatalf("runtime limit %d MiB before Govern", got>>20)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Govern(ctx, testFloor, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for b.Limit() != testFloor {
		if time.Now().After(deadline) {
			t.Fatalf("the Budget's limit is %d MiB, want the floor", b.Limit()>>20)
		}
		time.Sleep(time.Millisecond)
	}
	if got := debug.SetMemoryLimit(-1); got != testFloor-64<<20 {
		t.Fatalf("runtime limit %d MiB with 64 MiB mapped, want the floor less them", got>>20)
	}
	cancel()
	<-done
	if b.Limit() != testCeiling || debug.SetMemoryLimit(-1) != testCeiling-64<<20 {
		t.Fatalf("after Govern: limit %d MiB, runtime %d MiB", b.Limit()>>20, debug.SetMemoryLimit(-1)>>20)
	}
	a.Free(buf)
	a.Close()
	if got := debug.SetMemoryLimit(-1); got != testCeiling {
		t.Fatalf("nothing mapped: runtime limit %d MiB", got>>20)
	}

	none := NewBudget(0)
	none.Govern(t.Context(), testFloor, nil) // returns at once
	high := NewBudget(testCeiling)
	high.Govern(t.Context(), testCeiling, nil)
	if debug.SetMemoryLimit(-1) != testCeiling {
		t.Fatal("a Govern that should not run moved the runtime limit")
	}
}
