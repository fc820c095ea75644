//go:build unix

package integration

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
)

// TestNetworkFaults streams W1 from Go clients (through a fault proxy to
// lakehouse serve) and from legacy children (through a standalone lakehouse
// bridge whose upstream goes through another proxy) while the proxies drop
// every connection, cut connections in the middle of a frame, slow the
// link, stall it for longer than the keepalive time, and blackhole the
// current connections for good. Each round must end with every acked entry
// stored exactly once; the stall and the blackhole must be detected by the
// keepalives (connections replaced while the link is still stalled) and the
// pending batches resent.
func TestNetworkFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	c := newCluster(t, clusterConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	type round struct {
		name   string
		faults int
		inject func(l *load) time.Duration // returns the time to recover
	}
	accepted := func(p *faultproxy.Proxy) int64 { return p.Stats().Accepted }
	each := func(f func(p *faultproxy.Proxy)) {
		for _, p := range c.proxies() {
			f(p)
		}
	}
	rounds := []round{
		{"drop", 3, func(l *load) time.Duration {
			before := accepted(c.native)
			var at time.Time
			for range 3 {
				each((*faultproxy.Proxy).Drop)
				at = time.Now()
				time.Sleep(300 * time.Millisecond)
			}
			rec := l.waitProgress(ctx, at)
			if accepted(c.native) == before {
				t.Errorf("drop: the clients never reconnected")
			}
			return rec
		}},
		{"cut-mid-frame", 3, func(l *load) time.Duration {
			var at time.Time
			for range 3 {
				n := int64(1 + rng.IntN(4000))
				each(func(p *faultproxy.Proxy) { p.CutAfter(n) })
				at = time.Now()
				time.Sleep(400 * time.Millisecond)
			}
			return l.waitProgress(ctx, at)
		}},
		{"slow-link", 1, func(l *load) time.Duration {
			each(func(p *faultproxy.Proxy) { p.SetLatency(30 * time.Millisecond); p.SetBandwidth(256 << 10) })
			time.Sleep(3 * time.Second)
			each(func(p *faultproxy.Proxy) { p.SetLatency(0); p.SetBandwidth(0) })
			return l.waitProgress(ctx, time.Now())
		}},
		{"stall", 1, func(l *load) time.Duration {
			nb, ub := accepted(c.native), accepted(c.upstream)
			each((*faultproxy.Proxy).Stall)
			// Longer than the clients' and the bridge's keepalive time
			// plus timeout (10 s + 2 s): they must give up on the stalled
			// connections and dial new ones before the link comes back.
			time.Sleep(15 * time.Second)
			na, ua := accepted(c.native), accepted(c.upstream)
			each((*faultproxy.Proxy).Resume)
			at := time.Now()
			if na == nb {
				t.Errorf("stall: the Go clients kept their stalled connection for 15 s (keepalive %v + %v)", harnessClientKeepalive, harnessClientKATimeout)
			}
			if ua == ub {
				t.Errorf("stall: the bridge kept its stalled upstream connections for 15 s")
			}
			return l.waitProgress(ctx, at)
		}},
		{"blackhole", 1, func(l *load) time.Duration {
			// The current connections go silent for good (a NAT forgot
			// them); new ones work. Only keepalives get the sources out.
			each((*faultproxy.Proxy).Blackhole)
			return l.waitProgress(ctx, time.Now())
		}},
	}
	var results []*scenarioResult
	var loads []*load
	for _, r := range rounds {
		l, err := startLoad(ctx, loadConfig{prefix: "net-" + r.name, native: 2, legacy: 2, batchSize: 50, batches: 150,
			window: 4, ackTimeout: 5 * time.Second}, c.native.Addr(), c.bridgeURL)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		for l.progress() < 20 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		res := &scenarioResult{name: r.name, faults: r.faults}
		start := time.Now()
		res.recover = r.inject(l)
		rctx, rcancel := context.WithTimeout(ctx, 45*time.Second)
		err = l.wait(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s\nbridge:\n%s", r.name, err, readLog(t, c.logPath), readLog(t, c.bridgeLog))
		}
		t.Logf("%s: done %v after the fault began; recovered %v after it ended", r.name, time.Since(start).Round(time.Millisecond), res.recover.Round(time.Millisecond))
		l.close()
		results, loads = append(results, res), append(loads, l)
	}
	if err := c.drain(2 * time.Minute); err != nil {
		t.Error(err)
	}
	c.stop()
	stored := storedCounts(readIceberg(t, c.dataDir, ""))
	for i, r := range results {
		r.add(loads[i], stored)
		r.peakKB = c.peakKB.Load()
		r.check(t)
	}
	t.Logf("network faults (seed %d):\n%s", seed, report(results))
	if t.Failed() {
		t.Logf("server log:\n%s\nbridge log:\n%s", readLog(t, c.logPath), readLog(t, c.bridgeLog))
	}
}
