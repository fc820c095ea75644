//go:build unix

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/dot-do/lakehouse-rpc/client"
)

// Three `lakehouse serve --coordination catalog` processes share one
// PostgreSQL catalog and one S3 bucket (docs/scale-out.md, issue 14). Go
// clients reach them through a client-side balancer (a manual resolver
// listing the live instances, each client's home instance first, as an L4
// balancer with health checks would); legacy children go through a
// standalone `lakehouse bridge` in front of one instance. Faults in turn:
// kill -9 of a (its sources move; it restarts on its log), SIGSTOP of b past
// its lease then SIGCONT (its commits of moved sources are fenced), SIGTERM
// drain of c (then it restarts).

// threeConfig sizes one run.
type threeConfig struct {
	native, legacy int
	batches        int
	rate           float64       // batches per second per source
	pause          time.Duration // SIGSTOP length (past the 2 s lease)
	seed           uint64        // 0: no randomization
}

// TestScaleOutThree is the quick version; TestScaleOutThreeLong (env
// LAKEHOUSE_SCALEOUT_LONG=1) the big randomized one.
func TestScaleOutThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	if os.Getenv("LAKEHOUSE_SCALEOUT_LONG") != "1" {
		t.Skip("about 2 minutes on 2 cores; set LAKEHOUSE_SCALEOUT_LONG=1")
	}
	scaleOutThree(t, threeConfig{native: 6, legacy: 2, batches: 100, rate: 10, pause: 4 * time.Second})
}

func TestScaleOutThreeLong(t *testing.T) {
	if os.Getenv("LAKEHOUSE_SCALEOUT_LONG") != "1" {
		t.Skip("set LAKEHOUSE_SCALEOUT_LONG=1")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LAKEHOUSE_SCALEOUT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay with LAKEHOUSE_SCALEOUT_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	scaleOutThree(t, threeConfig{native: 24, legacy: 8, batches: 150 + rng.IntN(100), rate: 4 + 4*rng.Float64(),
		pause: time.Duration(3000+rng.IntN(4000)) * time.Millisecond, seed: seed})
}

// balancer is a client-side L4 balancer: one manual resolver per client
// connection, listing the live instances with the client's home first.
type balancer struct {
	mu    sync.Mutex
	addrs []string
	down  map[string]bool
	rs    []*manual.Resolver
	homes []int
}

func (b *balancer) order(home int) []resolver.Address {
	var out []resolver.Address
	for i := range b.addrs {
		a := b.addrs[(home+i)%len(b.addrs)]
		if !b.down[a] {
			out = append(out, resolver.Address{Addr: a})
		}
	}
	return out
}

// target returns the dial target and option of a client whose home is
// instance home.
func (b *balancer) target(home int) (string, grpc.DialOption) {
	b.mu.Lock()
	defer b.mu.Unlock()
	scheme := fmt.Sprintf("lh%d", len(b.rs))
	r := manual.NewBuilderWithScheme(scheme)
	r.InitialState(resolver.State{Addresses: b.order(home)})
	b.rs, b.homes = append(b.rs, r), append(b.homes, home)
	return scheme + ":///lakehouse", grpc.WithResolvers(r)
}

// set marks addr live or down (a health check) and updates every client.
func (b *balancer) set(addr string, live bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down[addr] = !live
	for i, r := range b.rs {
		if r.CC() != nil {
			r.UpdateState(resolver.State{Addresses: b.order(b.homes[i])})
		}
	}
}

// nativeLoad starts the Go-client sources spread over the instances; every
// other one holds its batches until persisted. persisted[i] is source i's
// persisted entry watermark.
type nativeLoad struct {
	*load
	mu        sync.Mutex
	persisted map[string]uint64
	waitsPers map[string]bool
}

func startNative(ctx context.Context, cfg loadConfig, lb *balancer) (*nativeLoad, error) {
	nl := &nativeLoad{load: &load{cfg: cfg}, persisted: map[string]uint64{}, waitsPers: map[string]bool{}}
	for i := range cfg.native {
		id := fmt.Sprintf("%s-n-%d", cfg.prefix, i)
		s := &nativeSource{id: id}
		target, dopt := lb.target(i % len(lb.addrs))
		// Keepalive also as a dial option: the client's redirect targets
		// are dialed with the dial options only (see the report).
		ka := grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: harnessClientKeepalive,
			Timeout: harnessClientKATimeout, PermitWithoutStream: true})
		opts := append(clientOptions(cfg), client.WithDialOptions(dopt, ka),
			client.OnAck(func(a client.Ack) { s.acked.Add(int64(a.Entries)) }),
			client.OnPersisted(func(p client.Persisted) {
				nl.mu.Lock()
				nl.persisted[id] = max(nl.persisted[id], p.EntrySequence)
				nl.mu.Unlock()
			}),
			client.OnError(func(err error) {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.gaveUp == nil && errors.Is(err, client.ErrGaveUp) {
					s.gaveUp = err
				}
			}))
		if i%2 == 1 {
			opts = append(opts, client.WithWaitForPersisted(true))
			nl.waitsPers[id] = true
		}
		cl, err := client.Dial(ctx, target, id, opts...)
		if err != nil {
			nl.close()
			return nil, fmt.Errorf("dial %s: %w", id, err)
		}
		s.cl = cl
		nl.native = append(nl.native, s)
		nl.wg.Add(1)
		go func() { defer nl.wg.Done(); s.run(ctx, cfg) }()
	}
	return nl, nil
}

func scaleOutThree(t *testing.T, tc threeConfig) {
	start := time.Now()
	so := newScaleOut(t)
	s3 := startS3(t)
	s3.CreateBucket(t, "lake")
	so.warehouse, so.props, so.env = "s3://lake/wh", s3.Props(), s3.Env()
	const flushEvery = time.Second
	opts := []string{"--flush-interval", flushEvery.String(), "--flush-entries", "3000", "--commit-timeout", "20s",
		"--grpc-keepalive-time", harnessServerKeepalive, "--grpc-keepalive-timeout", harnessServerKATimeout}
	committer := os.Getenv("LAKEHOUSE_SCALEOUT_COMMITTER") == "1"
	if committer {
		opts = append(opts, "--elected-committer")
	}
	names := []string{"a", "b", "c"}
	procs := make([]*proc, 3)
	addrs := make([]string, 3)
	for i, n := range names {
		procs[i], addrs[i] = so.start(n, opts...)
	}
	// Restarts keep the address (the lease rows advertise it).
	restart := func(i int) {
		procs[i] = startProcEnv(t, so.env, addrs[i], filepath.Join(so.dir, names[i]+".log"), procs[i].args...)
	}
	bridgeAddr := freeAddr(t)
	bridgeLog := filepath.Join(so.dir, "bridge.log")
	startProc(t, "", bridgeLog, "bridge", "--upstream", addrs[2], "--http-addr", bridgeAddr,
		"--upstream-keepalive-time", harnessBridgeKeepalive, "--upstream-keepalive-timeout", harnessBridgeKATimeout,
		"--ping-interval", harnessBridgePing, "--ping-timeout", harnessBridgePingTimout, "--log-level", "info")
	waitHTTP(t, "http://"+bridgeAddr+"/health", bridgeLog)
	allLogs := func() string { return so.logs("a", "b", "c") + "--- bridge\n" + readLog(t, bridgeLog) }

	// Persisted-mode clients hold window batches until a commit: about
	// window batches per commit interval each.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cfg := loadConfig{prefix: "three", native: tc.native, legacy: tc.legacy, batchSize: 50, batches: tc.batches,
		window: 4, rate: tc.rate, ackTimeout: 3 * time.Second}
	lb := &balancer{addrs: addrs, down: map[string]bool{}}
	nl, err := startNative(ctx, cfg, lb)
	if err != nil {
		t.Fatalf("%v\n%s", err, allLogs())
	}
	defer nl.close()
	lcfg := cfg
	lcfg.native, lcfg.window = 0, 16 // legacy acks come with commits: a wider window keeps pace
	ll, err := startLoad(ctx, lcfg, "", "ws://"+bridgeAddr+"/cdc")
	if err != nil {
		t.Fatalf("%v\n%s", err, allLogs())
	}
	defer ll.close()
	faults := 0
	var resume []time.Duration

	// 1. kill -9 a; the balancer's health check takes it out.
	time.Sleep(3 * time.Second)
	killAt := time.Now()
	procs[0].kill()
	lb.set(addrs[0], false)
	faults++
	resume = append(resume, nl.waitProgress(ctx, killAt))
	t.Logf("kill -9 a: every source progressed again %v later", resume[0].Round(10*time.Millisecond))
	restart(0)
	lb.set(addrs[0], true)
	t.Logf("a restarted: %d moved sources' batches dropped from its log",
		strings.Count(readLog(t, filepath.Join(so.dir, "a.log")), "source moved to another instance while this one was down"))

	// 2. SIGSTOP b past its lease; its sources move; SIGCONT.
	time.Sleep(2 * time.Second)
	stopAt := time.Now()
	if err := procs[1].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	lb.set(addrs[1], false)
	faults++
	d := nl.waitProgress(ctx, stopAt)
	resume = append(resume, d)
	t.Logf("SIGSTOP b: every source progressed again %v later", d.Round(10*time.Millisecond))
	time.Sleep(time.Until(stopAt.Add(tc.pause)))
	if err := procs[1].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	lb.set(addrs[1], true)

	// 3. SIGTERM drain of c (the bridge's upstream), then restart it.
	time.Sleep(2 * time.Second)
	drainAt := time.Now()
	lb.set(addrs[2], false)
	if err := procs[2].stop(60 * time.Second); err != nil {
		t.Errorf("drain c: %v", err)
	}
	faults++
	t.Logf("c drained in %v", time.Since(drainAt).Round(10*time.Millisecond))
	restart(2)
	lb.set(addrs[2], true)

	if err := nl.wait(ctx); err != nil {
		t.Fatalf("native sources: %v\n%s", err, allLogs())
	}
	if err := ll.wait(ctx); err != nil {
		t.Fatalf("legacy children: %v\n%s", err, allLogs())
	}
	nl.close() // persisted-mode clients wait for their last watermark
	ll.close()
	for _, addr := range addrs {
		if r := flushRPC(t, addr); !r.GetSuccess() {
			t.Errorf("flush %s: %+v", addr, r)
		}
	}
	runFor := time.Since(start)
	for i, p := range procs {
		if err := p.stop(60 * time.Second); err != nil {
			t.Errorf("stop %s: %v", names[i], err)
		}
	}
	logB := readLog(t, filepath.Join(so.dir, "b.log"))
	t.Logf("b after SIGCONT: fenced in the catalog %d times, dropped moved batches %d times",
		strings.Count(logB, "fenced"), strings.Count(logB, "dropped batches of sources that moved"))

	stored := so.read()
	counts := storedCounts(stored)
	// ok-mode clients drop a batch at its ack: when their source moves
	// while the acking instance is dead or paused, its uncommitted batches
	// are dropped by design (docs/scale-out.md, "ok and persisted"), and
	// the client renumbers. Only persisted-mode clients and the legacy
	// children (behind the drained instance, which never loses a lease
	// uncommitted) must have every acked entry.
	okMode, persMode := &load{cfg: cfg}, &load{cfg: cfg}
	for _, s := range nl.native {
		if nl.waitsPers[s.id] {
			persMode.native = append(persMode.native, s)
		} else {
			okMode.native = append(okMode.native, s)
		}
	}
	strict := &scenarioResult{name: "persisted+legacy", faults: faults}
	strict.add(persMode, counts)
	strict.add(ll, counts)
	okRes := &scenarioResult{name: "ok-mode", faults: faults}
	okRes.add(okMode, counts)
	for _, d := range resume {
		strict.recover = max(strict.recover, d)
		okRes.recover = strict.recover
	}
	if strict.missing != 0 || strict.dupNative != 0 || strict.dupLegacy != 0 {
		t.Errorf("persisted-mode clients and legacy children: %d acked entries missing, %d+%d duplicated",
			strict.missing, strict.dupNative, strict.dupLegacy)
	}
	if okRes.dupNative != 0 {
		t.Errorf("ok-mode clients: %d duplicate rows", okRes.dupNative)
	}
	if strict.missing+okRes.missing > 0 {
		t.Logf("acked entries not stored, by source (ok-mode losses are by design when a source moves):\n%s",
			missingBySource(nl.load, ll, counts))
	}
	var persistedMissing, persistedTotal int64
	for id, p := range nl.persisted {
		if !nl.waitsPers[id] {
			continue
		}
		persistedTotal += int64(p)
		for q := uint64(1); q <= p; q++ {
			if counts[id][q] != 1 {
				persistedMissing++
			}
		}
	}
	if persistedMissing != 0 {
		t.Errorf("%d persisted entries not stored exactly once", persistedMissing)
	}
	if want := int64(tc.native/2) * int64(tc.batches*cfg.batchSize); persistedTotal != want {
		t.Errorf("persisted-mode clients: %d entries persisted, want %d", persistedTotal, want)
	}
	// An independent read: a fresh reader of the catalog and the row counts
	// of `lakehouse tables`.
	if again := readIcebergConfig(t, so.config()); len(again) != len(stored) {
		t.Errorf("independent reader: %d rows, first read %d", len(again), len(stored))
	}
	snaps, rows := tablesCommand(t, so)
	if rows != int64(len(stored)) {
		t.Errorf("lakehouse tables: %d rows, read %d", rows, len(stored))
	}
	intervals := runFor.Seconds() / flushEvery.Seconds()
	var b strings.Builder
	for name, n := range snaps {
		fmt.Fprintf(&b, " %s=%d (%.2f/interval)", name, n, float64(n)/intervals)
	}
	t.Logf("snapshots per table over %.0f commit intervals of %v (elected committer: %v):%s",
		intervals, flushEvery, committer, b.String())
	if committer {
		// One committer tick per interval, plus the final flushes of the
		// drains and the last commits after the load ends.
		for name, n := range snaps {
			if float64(n) > intervals+10 {
				t.Errorf("table %s: %d snapshots over %.0f intervals with the elected committer", name, n, intervals)
			}
		}
	}
	t.Logf("persisted-mode clients: %d entries persisted, all stored once", persistedTotal)
	t.Logf("report (recover = longest time for every source to progress after a kill or pause):\n%s", report([]*scenarioResult{strict, okRes}))
	if t.Failed() {
		t.Log(allLogs())
	}
}

// tablesCommand runs `lakehouse tables --json` against the shared catalog:
// snapshots per table and the total rows.
func tablesCommand(t *testing.T, so *scaleOut) (map[string]int, int64) {
	t.Helper()
	cmd := exec.Command(lakehouseBin(t), "tables", "--json", "--data-dir", t.TempDir(), "--catalog-uri", so.dsn,
		"--warehouse", so.warehouse, "--catalog-props", catalogProps(so.props))
	cmd.Env = append(os.Environ(), so.env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lakehouse tables: %v", err)
	}
	var tables []struct {
		Name      string `json:"name"`
		Rows      int64  `json:"rows"`
		Snapshots int    `json:"snapshots"`
	}
	if err := json.Unmarshal(out, &tables); err != nil {
		t.Fatalf("lakehouse tables --json: %v\n%s", err, out)
	}
	snaps, rows := map[string]int{}, int64(0)
	for _, tb := range tables {
		snaps[tb.Name] = tb.Snapshots
		rows += tb.Rows
	}
	return snaps, rows
}

// missingBySource describes, per source, the entries sent and not stored once
// (the first and last of them and their number).
func missingBySource(nl, ll *load, counts map[string]map[uint64]int) string {
	var b strings.Builder
	total := uint64(nl.cfg.batches * nl.cfg.batchSize)
	for _, l := range []*load{nl, ll} {
		var ids []string
		for _, s := range l.native {
			ids = append(ids, s.id)
		}
		for _, s := range l.legacy {
			ids = append(ids, s.id)
		}
		for _, id := range ids {
			var first, last, n uint64
			for q := uint64(1); q <= total; q++ {
				if counts[id][q] != 1 {
					if n == 0 {
						first = q
					}
					last, n = q, n+1
				}
			}
			if n > 0 {
				fmt.Fprintf(&b, "%s: %d entries not stored once, %d..%d\n", id, n, first, last)
			}
		}
	}
	return b.String()
}
