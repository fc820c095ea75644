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
// standalone `lakehouse bridge` in front of one instance. Faults: kill -9
// of a (its sources move; it restarts on its log), SIGSTOP of b past its
// lease then SIGCONT (its commits of moved sources are fenced), SIGTERM
// drain of c (then it restarts); in turn, or (threeConfig.together) the
// first two at once and the drain while b is stopped. Checked: every entry
// acked to a persisted-mode client or a legacy child stored exactly once,
// an independent reader (internal/icebergcheck) agreeing with iceberg-go's
// scan, and the snapshots per table per commit interval (reported; asserted
// with LAKEHOUSE_SCALEOUT_ASSERT_SNAPSHOTS=1).

// threeConfig sizes one run.
type threeConfig struct {
	native, legacy int
	batches        int
	rate           float64       // batches per second per source
	window         int           // Go clients' batches in flight
	pause          time.Duration // SIGSTOP length (past the lease)
	flushEvery     time.Duration // --flush-interval: the commit interval
	leaseTTL       time.Duration // --lease-ttl
	firstFault     time.Duration // streaming before the first fault
	// together kills a and stops b at the same moment (their sources all
	// move to c at once), and drains c as soon as both are back: one
	// recovery period instead of two, for the quick run.
	together bool
	seed     uint64 // 0: no randomization
}

// TestScaleOutThree is the quick version, run by default (about 45 s on 2
// cores); TestScaleOutThreeFull (env LAKEHOUSE_SCALEOUT_LONG=1) runs the
// faults one after another, and TestScaleOutThreeLong the big randomized
// one.
func TestScaleOutThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	scaleOutThree(t, threeConfig{native: 6, legacy: 2, batches: 100, rate: 5, window: 16, pause: 3 * time.Second,
		flushEvery: 500 * time.Millisecond, leaseTTL: 2 * time.Second, firstFault: 3 * time.Second, together: true})
}

func TestScaleOutThreeFull(t *testing.T) {
	if os.Getenv("LAKEHOUSE_SCALEOUT_LONG") != "1" {
		t.Skip("about 2 minutes on 2 cores; set LAKEHOUSE_SCALEOUT_LONG=1")
	}
	scaleOutThree(t, threeConfig{native: 6, legacy: 2, batches: 100, rate: 10, window: 4, pause: 4 * time.Second,
		flushEvery: time.Second, leaseTTL: 2 * time.Second, firstFault: 3 * time.Second})
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
	scaleOutThree(t, threeConfig{native: 24, legacy: 8, batches: 150 + rng.IntN(100), rate: 4 + 4*rng.Float64(), window: 4,
		pause: time.Duration(3000+rng.IntN(4000)) * time.Millisecond, flushEvery: time.Second, leaseTTL: 2 * time.Second,
		firstFault: 3 * time.Second, together: rng.IntN(2) == 0, seed: seed})
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
	phase := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	so := newScaleOut(t)
	s3 := startS3(t)
	s3.CreateBucket(t, "lake")
	phase("object store up")
	so.warehouse, so.props, so.env = "s3://lake/wh", s3.Props(), s3.Env()
	opts := []string{"--flush-interval", tc.flushEvery.String(), "--flush-entries", "3000", "--commit-timeout", "20s",
		"--lease-ttl", tc.leaseTTL.String(),
		"--grpc-keepalive-time", harnessServerKeepalive, "--grpc-keepalive-timeout", harnessServerKATimeout}
	// The elected committer (on by default with --coordination) is what
	// bounds snapshots to one per table per interval;
	// LAKEHOUSE_SCALEOUT_COMMITTER=0 runs without it (each instance commits
	// on its own cadence, and the bound is not checked).
	committer := os.Getenv("LAKEHOUSE_SCALEOUT_COMMITTER") != "0"
	if !committer {
		opts = append(opts, "--elected-committer=false")
	}
	names := []string{"a", "b", "c"}
	procs := make([]*proc, 3)
	addrs := make([]string, 3)
	for i, n := range names {
		procs[i], addrs[i] = so.launch(n, opts...)
	}
	for i, n := range names {
		procs[i].waitHealthy(addrs[i], filepath.Join(so.dir, n+".log"))
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
	phase("three instances and the bridge up")

	// Persisted-mode clients hold window batches until a commit: about
	// window batches per commit interval each. With room in the window, a
	// batch is soon in flight to a paused instance and its ack timeout
	// moves the client; with all of it waiting for persisted, only gRPC
	// keepalive (at least 10 s + timeout) notices the pause.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	loadStart := time.Now()
	cfg := loadConfig{prefix: "three", native: tc.native, legacy: tc.legacy, batchSize: 50, batches: tc.batches,
		window: tc.window, rate: tc.rate, ackTimeout: 3 * time.Second}
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
	time.Sleep(tc.firstFault)

	killA := func() time.Time {
		at := time.Now()
		procs[0].kill()
		lb.set(addrs[0], false) // the balancer's health check takes it out
		faults++
		return at
	}
	stopB := func() time.Time {
		at := time.Now()
		if err := procs[1].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		lb.set(addrs[1], false)
		faults++
		return at
	}
	restartA := func() {
		restart(0)
		lb.set(addrs[0], true)
		phase("a restarted: %d moved sources' batches dropped from its log",
			strings.Count(readLog(t, filepath.Join(so.dir, "a.log")), "source moved to another instance while this one was down"))
	}
	contB := func(stopAt time.Time) {
		time.Sleep(time.Until(stopAt.Add(tc.pause)))
		if err := procs[1].cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		lb.set(addrs[1], true)
		phase("b continued after %v stopped", time.Since(stopAt).Round(10*time.Millisecond))
	}
	drainC := func() {
		// SIGTERM drain of c (the bridge's upstream), then restart it.
		drainAt := time.Now()
		lb.set(addrs[2], false)
		if err := procs[2].stop(60 * time.Second); err != nil {
			t.Errorf("drain c: %v", err)
		}
		faults++
		phase("c drained in %v", time.Since(drainAt).Round(10*time.Millisecond))
		if nl.finished() {
			t.Errorf("the Go clients had sent everything before c drained: the run is too short to test the faults")
		}
		restart(2)
		lb.set(addrs[2], true)
		phase("c restarted")
	}
	// Persisted-mode clients can resend what a dead or paused instance
	// acked, so their sources move at once. An ok-mode client cannot: its
	// source waits for that instance to come back and commit its log
	// (docs/scale-out.md, "ok and persisted"), so it resumes only then.
	persLoad, okLoad := &load{cfg: cfg}, &load{cfg: cfg}
	for _, s := range nl.native {
		if nl.waitsPers[s.id] {
			persLoad.native = append(persLoad.native, s)
		} else {
			okLoad.native = append(okLoad.native, s)
		}
	}
	var okResume []time.Duration
	if tc.together {
		// kill -9 a and SIGSTOP b at once: every persisted-mode source
		// moves to c. Once they progress there, a restarts (its ok-mode
		// sources resume on it) and c drains while b is still stopped
		// (its sources move again, to a); then b continues.
		stopAt := stopB()
		killAt := killA()
		d := persLoad.waitProgress(ctx, killAt)
		resume = append(resume, d)
		phase("kill -9 a + SIGSTOP b: every persisted-mode source progressed again %v later", d.Round(10*time.Millisecond))
		restartA()
		drainC()
		contB(stopAt)
		d = okLoad.waitProgress(ctx, killAt)
		okResume = append(okResume, d)
		phase("every ok-mode source progressed again %v after the faults", d.Round(10*time.Millisecond))
	} else {
		// 1. kill -9 a; its persisted-mode sources move; it restarts on
		// its log and its ok-mode sources resume there.
		killAt := killA()
		resume = append(resume, persLoad.waitProgress(ctx, killAt))
		phase("kill -9 a: every persisted-mode source progressed again %v later", resume[0].Round(10*time.Millisecond))
		restartA()
		okResume = append(okResume, okLoad.waitProgress(ctx, killAt))
		phase("kill -9 a: every ok-mode source progressed again %v later", okResume[0].Round(10*time.Millisecond))
		// 2. SIGSTOP b past its lease; its persisted-mode sources move;
		// SIGCONT, and its ok-mode sources resume on it.
		time.Sleep(2 * time.Second)
		stopAt := stopB()
		d := persLoad.waitProgress(ctx, stopAt)
		resume = append(resume, d)
		phase("SIGSTOP b: every persisted-mode source progressed again %v later", d.Round(10*time.Millisecond))
		contB(stopAt)
		d = okLoad.waitProgress(ctx, stopAt)
		okResume = append(okResume, d)
		phase("SIGSTOP b: every ok-mode source progressed again %v later", d.Round(10*time.Millisecond))
		// 3. drain c.
		time.Sleep(2 * time.Second)
		drainC()
	}

	if err := nl.wait(ctx); err != nil {
		t.Fatalf("native sources: %v\n%s", err, allLogs())
	}
	if err := ll.wait(ctx); err != nil {
		t.Fatalf("legacy children: %v\n%s", err, allLogs())
	}
	nl.close() // persisted-mode clients wait for their last watermark
	ll.close()
	phase("every source done")
	for _, addr := range addrs {
		if r := flushRPC(t, addr); !r.GetSuccess() {
			t.Errorf("flush %s: %+v", addr, r)
		}
	}
	for i, p := range procs {
		if err := p.stop(60 * time.Second); err != nil {
			t.Errorf("stop %s: %v", names[i], err)
		}
	}
	phase("instances stopped")
	logB := readLog(t, filepath.Join(so.dir, "b.log"))
	t.Logf("b after SIGCONT: fenced in the catalog %d times, dropped moved batches %d times",
		strings.Count(logB, "fenced"), strings.Count(logB, "dropped batches of sources that moved"))

	stored := so.read()
	counts := storedCounts(stored)
	// Every acked entry, of either mode, is stored exactly once: ok-mode
	// sources wait for their instance instead of moving without what it
	// acked.
	strict := &scenarioResult{name: "persisted+legacy", faults: faults}
	strict.add(persLoad, counts)
	strict.add(ll, counts)
	okRes := &scenarioResult{name: "ok-mode", faults: faults}
	okRes.add(okLoad, counts)
	for _, d := range resume {
		strict.recover = max(strict.recover, d)
	}
	for _, d := range okResume {
		okRes.recover = max(okRes.recover, d)
	}
	if strict.missing != 0 || strict.dupNative != 0 || strict.dupLegacy != 0 {
		t.Errorf("persisted-mode clients and legacy children: %d acked entries missing, %d+%d duplicated",
			strict.missing, strict.dupNative, strict.dupLegacy)
	}
	if okRes.missing != 0 || okRes.dupNative != 0 {
		t.Errorf("ok-mode clients: %d acked entries missing, %d duplicated", okRes.missing, okRes.dupNative)
	}
	if strict.missing+okRes.missing > 0 {
		t.Logf("acked entries not stored, by source:\n%s",
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
	// Independent reads: internal/icebergcheck's own manifest and Parquet
	// reader, and the row counts of `lakehouse tables`.
	indep, density := independentRead(t, so.config(), tc.flushEvery, loadStart)
	if diff := sameRows(indep, stored); diff != "" {
		t.Errorf("the independent reader (icebergcheck) disagrees with iceberg-go's scan: %s", diff)
	}
	_, rows := tablesCommand(t, so)
	if rows != int64(len(stored)) {
		t.Errorf("lakehouse tables: %d rows, read %d", rows, len(stored))
	}
	checkSnapshotDensity(t, density, tc.flushEvery, committer)
	phase("checked")
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
