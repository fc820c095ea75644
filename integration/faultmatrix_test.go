//go:build unix

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
	"github.com/dot-do/lakehouse-rpc/internal/testing/tmpfs"
)

// The fault matrix runs lakehouse serve and a standalone bridge as
// processes (harness_test.go), drives Go clients and legacy children with
// W1, and injects faults: kill -9 of the server (restarted on the same data
// directory), a full disk under the write-ahead log and the catalog (a
// small tmpfs), network faults through the proxies, a paused server
// (SIGSTOP), and a paused object store (pausedStoreScenario, provided
// separately). At the end it reads every table back and checks that no
// acknowledged entry is missing, no native entry is stored twice, legacy
// entries are not either (every resend is inside the dedup window), the
// server drained its log and buffer, and every table reads.
//
// The quick matrix (every scenario once) runs in the normal test run. The
// long one mixes the faults at random for a duration:
//
//	LAKEHOUSE_FAULT_MATRIX=30m [LAKEHOUSE_FAULT_SEED=n] go test ./integration -run TestFaultMatrixLong -v -timeout 0
const (
	faultMatrixEnv = "LAKEHOUSE_FAULT_MATRIX"
	faultSeedEnv   = "LAKEHOUSE_FAULT_SEED"
)

// Fault kinds, counted by the long run.
const (
	kindKill    = "kill-9"
	kindDisk    = "disk-full"
	kindNetwork = "network"
	kindPause   = "pause"
	kindStore   = "store-pause"
)

// faultScenario is one kind of fault.
type faultScenario struct {
	name string
	kind string
	// setup adjusts the cluster's configuration before it starts; a
	// non-empty result skips the scenario and says why. Nil: nothing.
	setup func(t *testing.T, cfg *clusterConfig) (skip string)
	// inject performs one episode while fr.load streams and returns when
	// the fault is over; it returns what it did and how many faults that
	// was (kill points, full-disk episodes...).
	inject func(fr *faultRun) (string, int)
}

// faultRun is what an episode acts on.
type faultRun struct {
	t    *testing.T
	ctx  context.Context
	c    *cluster
	rng  *rand.Rand
	load *load
	long bool   // the long run: longer and more varied episodes
	disk string // the tmpfs under the data directory ("" when none)
}

// between returns a random duration in [lo, hi].
func (fr *faultRun) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(fr.rng.Int64N(int64(hi-lo)+1))
}

// diskSetup puts the data directory (log, SQLite catalog) on a small tmpfs
// and the warehouse elsewhere, so that a long run does not fill it with
// table files and the filler alone decides when it is full.
func diskSetup(dir *string) func(t *testing.T, cfg *clusterConfig) string {
	return func(t *testing.T, cfg *clusterConfig) string {
		mnt, err := tmpfs.Mount(t, "64m")
		if err != nil {
			return "cannot mount a 64m tmpfs to fill (" + err.Error() + "): the full-disk scenario needs root or CAP_SYS_ADMIN"
		}
		*dir = mnt
		cfg.dataDir = filepath.Join(mnt, "data")
		cfg.serveArgs = append(cfg.serveArgs, "--wal-max-bytes", strconv.Itoa(16<<20),
			"--warehouse", "file://"+filepath.Join(t.TempDir(), "warehouse"))
		return ""
	}
}

func matrixScenarios() []faultScenario {
	s := []faultScenario{
		{name: "kill-9", kind: kindKill, inject: func(fr *faultRun) (string, int) {
			n := 1 + fr.rng.IntN(2)
			for i := range n {
				if i > 0 {
					time.Sleep(fr.between(100*time.Millisecond, time.Second))
				}
				fr.c.kill9()
			}
			return fmt.Sprintf("%d kills", n), n
		}},
		{name: "disk-full", kind: kindDisk, inject: func(fr *faultRun) (string, int) {
			d := 2 * time.Second
			if fr.long {
				d = fr.between(time.Second, 10*time.Second)
			}
			path, _ := tmpfs.Fill(fr.t, fr.disk)
			time.Sleep(d)
			if err := os.Remove(path); err != nil {
				fr.t.Error(err)
			}
			return "full for " + d.String(), 1
		}},
		{name: "network", kind: kindNetwork, inject: networkEpisode},
		{name: "pause", kind: kindPause, inject: func(fr *faultRun) (string, int) {
			d := 3 * time.Second
			if fr.long {
				d = fr.between(2*time.Second, 30*time.Second)
				if fr.rng.IntN(4) == 0 {
					// Mixed: the paused server is killed, not continued.
					fr.c.pauseThenKill(d)
					return "SIGSTOP for " + d.String() + ", then kill -9", 1
				}
			}
			fr.c.pause(d)
			return "SIGSTOP for " + d.String(), 1
		}},
	}
	if st, ok := pausedStoreScenario(); ok {
		s = append(s, st)
	}
	return s
}

// networkEpisode injects one network fault on both proxies; the quick run
// does a short series of each kind but blackhole (TestNetworkFaults covers
// the stall past the keepalive and the blackhole).
func networkEpisode(fr *faultRun) (string, int) {
	each := func(f func(p *faultproxy.Proxy)) {
		for _, p := range fr.c.proxies() {
			f(p)
		}
	}
	drop := func() { each((*faultproxy.Proxy).Drop) }
	cut := func() {
		n := int64(1 + fr.rng.IntN(8000))
		each(func(p *faultproxy.Proxy) { p.CutAfter(n) })
	}
	slow := func(d time.Duration) {
		each(func(p *faultproxy.Proxy) { p.SetLatency(40 * time.Millisecond); p.SetBandwidth(128 << 10) })
		time.Sleep(d)
		each(func(p *faultproxy.Proxy) { p.SetLatency(0); p.SetBandwidth(0) })
	}
	stall := func(d time.Duration) {
		each((*faultproxy.Proxy).Stall)
		time.Sleep(d)
		each((*faultproxy.Proxy).Resume)
	}
	if !fr.long {
		drop()
		time.Sleep(300 * time.Millisecond)
		cut()
		time.Sleep(300 * time.Millisecond)
		slow(time.Second)
		stall(2 * time.Second)
		return "drop, cut, slow 1s, stall 2s", 4
	}
	switch fr.rng.IntN(5) {
	case 0:
		drop()
		return "drop", 1
	case 1:
		cut()
		return "cut mid-frame", 1
	case 2:
		d := fr.between(time.Second, 8*time.Second)
		slow(d)
		return "slow link " + d.String(), 1
	case 3:
		d := fr.between(time.Second, 20*time.Second)
		if fr.rng.IntN(4) == 0 {
			// Mixed: the server is killed and restarted during the stall.
			each((*faultproxy.Proxy).Stall)
			time.Sleep(d / 2)
			fr.c.kill9()
			time.Sleep(d / 2)
			each((*faultproxy.Proxy).Resume)
			return "stall " + d.String() + " with a kill -9 in it", 1
		}
		stall(d)
		return "stall " + d.String(), 1
	default:
		each((*faultproxy.Proxy).Blackhole)
		return "blackhole", 1
	}
}

// TestFaultMatrix runs every scenario once, each on its own cluster.
func TestFaultMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	seed := matrixSeed(t)
	var results []*scenarioResult
	for _, sc := range matrixScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			var disk string
			cfg := clusterConfig{}
			if sc.kind == kindDisk {
				sc.setup = diskSetup(&disk)
			}
			if sc.setup != nil {
				if why := sc.setup(t, &cfg); why != "" {
					t.Skip("skipping: " + why)
				}
			}
			c := newCluster(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			fr := &faultRun{t: t, ctx: ctx, c: c, rng: rand.New(rand.NewPCG(seed, 0)), disk: disk}
			res := &scenarioResult{name: sc.name}
			l := fr.round(sc, res, "q-"+sc.name, 60, 50)
			finish(t, c, []*scenarioResult{res}, [][]*load{{l}})
			results = append(results, res)
		})
	}
	t.Logf("fault matrix, quick (seed %d):\n%s", seed, report(results))
}

// round streams one load, injects one episode of sc during it and waits for
// the load to finish; it adds the recovery time to res.
func (fr *faultRun) round(sc faultScenario, res *scenarioResult, prefix string, batches, batchSize int) *load {
	fr.t.Helper()
	// Paced at 10 batches a second per source, so that the fault lands in
	// the middle of the stream, after a random lead.
	l, err := startLoad(fr.ctx, loadConfig{prefix: prefix, native: 2, legacy: 2, batchSize: batchSize, batches: batches,
		window: 4, rate: 10, ackTimeout: 3 * time.Second}, fr.c.native.Addr(), fr.c.bridgeURL)
	if err != nil {
		fr.t.Fatalf("%s: %v\n%s", prefix, err, readLog(fr.t, fr.c.logPath))
	}
	lead := time.Duration(batches) * 100 * time.Millisecond / 4 // a quarter of the round
	time.Sleep(fr.between(lead/2, lead))
	fr.load = l
	what, n := sc.inject(fr)
	res.faults += n
	rec := l.waitProgress(fr.ctx, time.Now())
	res.recover = max(res.recover, rec)
	rctx, cancel := context.WithTimeout(fr.ctx, 3*time.Minute)
	defer cancel()
	if err := l.wait(rctx); err != nil {
		fr.t.Fatalf("%s (%s): %v\nserver:\n%s\nbridge:\n%s", prefix, what, err, readLog(fr.t, fr.c.logPath), readLog(fr.t, fr.c.bridgeLog))
	}
	fr.c.notePeak()
	l.close()
	if testing.Verbose() {
		fr.t.Logf("%s: %s; recovered in %v", prefix, what, rec.Round(time.Millisecond))
	}
	return l
}

// finish drains and stops the cluster, reads every table back and fills
// and checks each result from its loads.
func finish(t *testing.T, c *cluster, results []*scenarioResult, loads [][]*load) {
	t.Helper()
	if err := c.drain(2 * time.Minute); err != nil {
		t.Errorf("%v\n%s", err, readLog(t, c.logPath))
	}
	c.stop()
	stored := storedCounts(readIcebergConfig(t, iceberg.Config{DataDir: c.dataDir, Warehouse: warehouseArg(c.args), Properties: c.props}))
	for i, r := range results {
		for _, l := range loads[i] {
			r.add(l, stored)
		}
		r.peakKB = c.peakKB.Load()
		r.check(t)
	}
	if t.Failed() {
		t.Logf("server log:\n%s\nbridge log:\n%s", readLog(t, c.logPath), readLog(t, c.bridgeLog))
	}
}

// warehouseArg returns serve's --warehouse value ("" for the default).
func warehouseArg(args []string) string {
	w := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--warehouse" {
			w = args[i+1]
		}
	}
	return w
}

// matrixSeed returns LAKEHOUSE_FAULT_SEED or a new seed, and logs it.
func matrixSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(faultSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", faultSeedEnv, v, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, faultSeedEnv, seed)
	return seed
}
