//go:build unix

package integration

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// longMinimums are the fault counts a 30-minute run must reach.
var longMinimums = map[string]int{kindKill: 20, kindDisk: 5, kindNetwork: 10, kindPause: 2}

// TestFaultMatrixLong mixes the matrix's faults at random on one cluster for
// LAKEHOUSE_FAULT_MATRIX (a duration), one episode per round of W1 load, and
// checks everything at the end. LAKEHOUSE_FAULT_SEED replays a run.
func TestFaultMatrixLong(t *testing.T) {
	v := os.Getenv(faultMatrixEnv)
	if v == "" {
		t.Skipf("set %s=30m (a duration) to run the long randomized fault matrix", faultMatrixEnv)
	}
	dur, err := time.ParseDuration(v)
	if err != nil || dur <= 0 {
		t.Fatalf("%s=%q: want a duration such as 30m", faultMatrixEnv, v)
	}
	seed := matrixSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))

	var disk string
	cfg := clusterConfig{serveArgs: []string{"--no-maintenance=false", "--maintenance-interval", "20s"}}
	if why := diskSetup(&disk)(t, &cfg); why != "" {
		t.Logf("no full-disk episodes: %s", why)
	}
	// The bag holds each kind in the proportion wanted; drawn at random,
	// refilled when empty.
	weights := map[string]int{kindKill: 4, kindNetwork: 3, kindPause: 1, kindDisk: 1, kindStore: 1}
	byKind := map[string]faultScenario{}
	for _, sc := range matrixScenarios() {
		if sc.kind == kindDisk && disk == "" {
			continue
		}
		if sc.setup != nil {
			if why := sc.setup(t, &cfg); why != "" {
				t.Logf("no %s episodes: %s", sc.name, why)
				continue
			}
		}
		byKind[sc.kind] = sc
	}
	c := newCluster(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Minute)
	defer cancel()
	fr := &faultRun{t: t, ctx: ctx, c: c, rng: rng, long: true, disk: disk}

	results := map[string]*scenarioResult{}
	loads := map[string][]*load{}
	var order []string
	var bag []string
	end := time.Now().Add(dur)
	for round := 0; time.Now().Before(end); round++ {
		if len(bag) == 0 {
			for k, w := range weights {
				if _, ok := byKind[k]; ok {
					for range w {
						bag = append(bag, k)
					}
				}
			}
			// Map order is random; sort by the seed's order instead.
			slices.Sort(bag)
			rng.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		}
		kind := bag[0]
		bag = bag[1:]
		sc := byKind[kind]
		res := results[kind]
		if res == nil {
			res = &scenarioResult{name: kind}
			results[kind] = res
			order = append(order, kind)
		}
		l := fr.round(sc, res, "r"+strconv.Itoa(round)+"-"+kind, 40, 25)
		loads[kind] = append(loads[kind], l)
		time.Sleep(fr.between(0, 2*time.Second))
	}
	var rs []*scenarioResult
	var ls [][]*load
	for _, k := range order {
		rs, ls = append(rs, results[k]), append(ls, loads[k])
	}
	finish(t, c, rs, ls)
	total := &scenarioResult{name: "total"}
	for _, r := range rs {
		total.faults += r.faults
		total.sent += r.sent
		total.acked += r.acked
		total.stored += r.stored
		total.missing += r.missing
		total.dupNative += r.dupNative
		total.dupLegacy += r.dupLegacy
		total.recover = max(total.recover, r.recover)
		total.peakKB = r.peakKB
	}
	t.Logf("fault matrix, long run of %v (seed %d):\n%s", dur, seed, report(append(rs, total)))
	if dur >= 30*time.Minute {
		for k, want := range longMinimums {
			if _, ok := byKind[k]; !ok {
				continue
			}
			if got := results[k]; got == nil || got.faults < want {
				t.Errorf("%s: fewer than %d faults in %v", k, want, dur)
			}
		}
	}
}
