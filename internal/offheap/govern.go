package offheap

import (
	"context"
	"runtime/metrics"
	"time"
)

// Govern holds the process's soft limit between a floor and a ceiling by
// what the garbage collector costs. A limit close to what is live holds the
// RSS down, and the collector then runs more often: at 100,000 W1 entries/s
// a limit of the buffer cap plus 80 MiB kept a maintenance pass's RSS peak
// at 251-299 MiB instead of 323-357, for about a tenth more CPU per entry
// (the runs' noise is as large). At saturation, where a full memory buffer, a
// flush and a merge are live together, the same limit left the collector
// running without pause (29 collections a second) and the throughput fell
// from 300,000 to 185,000 entries/s. So the limit starts at the floor and
// rises toward the ceiling while the collector's share of the CPU the
// process uses, averaged over about a minute, is above governRaiseShare,
// and comes down again while it stays below governLowerShare: a maintenance
// pass's seconds of collections do not move it (averaged over 30 s they
// did, on a slow day), sustained load does. A burst is not left to the
// minute's average: while the collector takes more than governBurstShare
// over the last few seconds (a pass took at most 27%), the limit goes to the
// ceiling at once. A 5-s burst of 2 million entries into an idle server
// cost 1.8 times the CPU at the floor.
const (
	// governEvery is the time between two readings of the CPU counters.
	governEvery = 2 * time.Second
	// governAlpha is the weight of a reading in the average: about the
	// last 30 readings (a minute) count.
	governAlpha = 1.0 / 30
	// governRaiseShare and governLowerShare are the collector's shares of
	// the process's CPU above which the limit rises and below which it
	// comes down. At the floor, 100,000 W1 entries/s cost 3-5% and a
	// maintenance pass 15-27% for 10-20 s; saturation cost 25% and more.
	governRaiseShare = 0.15
	governLowerShare = 0.06
	// governBurstAlpha and governBurstShare: the short average (about the
	// last 3 readings) above which the limit goes to the ceiling at once.
	governBurstAlpha = 1.0 / 3
	governBurstShare = 0.35
	// A raise adds a quarter of the range from the floor to the ceiling,
	// at most once every governRaiseGap readings (the average lags).
	governRaiseParts = 4
	governRaiseGap   = 8
	// A lowering takes a sixteenth of the range, after governLowerAfter
	// readings in a row below governLowerShare.
	governLowerParts = 16
	governLowerAfter = 15
)

// governor is Govern's control law, apart from the clock and the runtime.
type governor struct {
	floor, ceiling int64
	limit          int64
	share          float64 // the collector's share of the process's CPU, averaged
	burst          float64 // the same over the last few readings
	sinceRaise     int     // readings since the last raise
	low            int     // readings in a row below governLowerShare
}

func newGovernor(floor, ceiling int64) *governor {
	return &governor{floor: floor, ceiling: ceiling, limit: floor, sinceRaise: governRaiseGap}
}

// step takes the CPU seconds the collector and the whole process used since
// the last step and returns the limit.
func (g *governor) step(gcSeconds, usedSeconds float64) int64 {
	share := 0.0
	if usedSeconds > 0 {
		share = min(max(gcSeconds/usedSeconds, 0), 1)
	}
	g.share += governAlpha * (share - g.share)
	g.burst += governBurstAlpha * (share - g.burst)
	g.sinceRaise++
	span := g.ceiling - g.floor
	switch {
	case g.burst > governBurstShare:
		g.low = 0
		if g.limit < g.ceiling {
			g.limit, g.sinceRaise = g.ceiling, 0
		}
	case g.share > governRaiseShare:
		g.low = 0
		if g.sinceRaise >= governRaiseGap && g.limit < g.ceiling {
			g.limit = min(g.ceiling, g.limit+max(span/governRaiseParts, 1))
			g.sinceRaise = 0
		}
	case g.share < governLowerShare:
		if g.low++; g.low >= governLowerAfter && g.limit > g.floor {
			g.limit = max(g.floor, g.limit-max(span/governLowerParts, 1))
			g.low = 0
		}
	default:
		g.low = 0
	}
	return g.limit
}

// Govern moves the process's soft limit the Budget shares between floor
// and the limit it was made with (the ceiling), starting at floor, until
// ctx ends; then it sets the ceiling back. changed, if not nil, is called
// with each new limit and the collector's share of the CPU averaged over
// the last minute and the last few seconds. It returns at
// once for a Budget without a limit or a floor not below the ceiling.
func (b *Budget) Govern(ctx context.Context, floor int64, changed func(limit int64, gcShare, gcShareRecent float64)) {
	if b == nil || b.unlimited {
		return
	}
	ceiling := b.Limit()
	if floor <= 0 || floor >= ceiling {
		return
	}
	defer b.setLimit(ceiling)
	g := newGovernor(floor, ceiling)
	b.setLimit(floor)
	cpu := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/cpu/classes/idle:cpu-seconds"}}
	read := func() (gc, used float64) {
		metrics.Read(cpu)
		return cpu[0].Value.Float64(), cpu[1].Value.Float64() - cpu[2].Value.Float64()
	}
	gc0, used0 := read()
	t := time.NewTicker(governEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gc, used := read()
		prev := g.limit
		limit := g.step(gc-gc0, used-used0)
		gc0, used0 = gc, used
		if limit != prev {
			b.setLimit(limit)
			if changed != nil {
				changed(limit, g.share, g.burst)
			}
		}
	}
}
