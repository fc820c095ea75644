//go:build unix

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestScaleOutMirrorElectedCommitter: two `lakehouse serve --coordination
// catalog --mirror` processes (the elected committer on, its default) on
// one PostgreSQL catalog take the keyed workload (overlapping keys, event
// times going backwards across sources, deletes, new fields), two sources
// each, sent to both at once. After flushes on request and a graceful
// stop: the changelog holds every change once, and every mirror table
// equals the model through iceberg-go's scan, icebergcheck's own reader
// and `lakehouse scan --mirror --json`, with the changelog's watermarks
// and its compaction bound. Before, the command line refused --mirror with
// the elected committer.
func TestScaleOutMirrorElectedCommitter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	scaleOutMirrorRun(t, 0)
}

// TestScaleOutMirrorElectedCommitterKill9 is
// TestScaleOutMirrorElectedCommitter with instance a killed (SIGKILL) while
// the changes stream, and restarted on its data directory: a holds some
// tables' committer roles, so kills land between a table's changelog and
// mirror commits, after parts are published, and in the middle of staging.
// The mirror must still equal the model, and the changelog hold every
// change once.
func TestScaleOutMirrorElectedCommitterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	scaleOutMirrorRun(t, 3)
}

// TestScaleOutMirrorDirectCommits is TestScaleOutMirrorElectedCommitter
// with --elected-committer=false: each instance commits the mirror tables
// itself, so both write the same keys' rows. Before an instance reloaded
// its order index when the mirror had another instance's commit since its
// own (and refused iceberg-go's replay of a commit onto one), it took
// changes older than the other's rows for new and replaced them: the
// mirror differed from the model.
func TestScaleOutMirrorDirectCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	scaleOutMirrorRun(t, 0, "--elected-committer=false")
}

func scaleOutMirrorRun(t *testing.T, kills int, extra ...string) {
	so := newScaleOut(t)
	seed := mirrorSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	rc := mirrorConfig(kills)
	rc.sources = 4
	gen, err := workload.NewKeyed(workload.KeyedConfig{Seed: seed, Keys: rc.keys, Sources: rc.sources, BatchSize: rc.batchSize})
	if err != nil {
		t.Fatal(err)
	}
	schemas := filepath.Join(so.dir, "schemas.yaml")
	if err := os.WriteFile(schemas, []byte("tables:\n  "+gen.Tables()[0]+":\n    key: pk\n    columns: {age: int, score: double, updated_at: timestamptz, note: string}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := []string{"--mirror", "--mirror-infer-timestamps", "--mirror-schemas", schemas, "--flush-interval", "500ms",
		"--flush-entries", "3000", "--mirror-compact-delete-files", strconv.Itoa(mirrorCompactAt)}
	opts = append(opts, extra...)
	a, addrA := so.start("a", opts...)
	b, addrB := so.start("b", opts...)
	senders := []*keyedSender{newKeyedSender(t, addrA), newKeyedSender(t, addrB)}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Sources 0 and 2 go to a, 1 and 3 to b; each instance's batches keep
	// the generated order (one sender goroutine per instance).
	queues := []chan workload.KeyedBatch{make(chan workload.KeyedBatch, rc.batches), make(chan workload.KeyedBatch, rc.batches)}
	made := map[string]uint64{}
	var order []string
	for range rc.batches {
		b := gen.Next()
		if _, ok := made[b.SourceID]; !ok {
			order = append(order, b.SourceID)
		}
		made[b.SourceID] += uint64(len(b.Entries))
		i := 0
		for j, src := range order {
			if src == b.SourceID {
				i = j % 2
			}
		}
		queues[i] <- b
	}
	var (
		wg       sync.WaitGroup
		progress atomic.Int64 // batches sent, both instances
	)
	errs := make([]error, 2)
	pace := time.Duration(0)
	if kills > 0 {
		pace = 10 * time.Millisecond // let commits happen between the kills
	}
	for i := range senders {
		close(queues[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range queues[i] {
				if err := senders[i].send(ctx, b); err != nil {
					errs[i] = err
					return
				}
				progress.Add(1)
				time.Sleep(pace)
			}
		}()
	}
	var at []int
	for range kills {
		at = append(at, rc.batches/10+rng.IntN(rc.batches*8/10))
	}
	slices.Sort(at)
	killed := 0
	for _, k := range at {
		for progress.Load() < int64(k) && ctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		a.kill()
		killed++
		// Restarts keep the address (the lease rows advertise it).
		a = startProcEnv(t, so.env, addrA, filepath.Join(so.dir, "a.log"), a.args...)
	}
	wg.Wait()
	if kills > 0 {
		t.Logf("%d kills of a while streaming, %d send attempts repeated, %d restarts abandoned published parts", killed,
			senders[0].resends, strings.Count(readLog(t, filepath.Join(so.dir, "a.log")), "parts published by a previous run abandoned"))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("sender %d: %v\n%s", i, err, so.logs("a", "b"))
		}
	}
	for _, s := range senders {
		r, err := lakehousev1.NewCDCServiceClient(s.cc).Flush(ctx, &lakehousev1.FlushRequest{})
		if err != nil || !r.GetResult().GetSuccess() {
			t.Fatalf("flush: %v %v\n%s", r, err, so.logs("a", "b"))
		}
		s.reset()
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(60 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	checkChangelogOnceOf(t, so.config(), gen.Tables(), made)
	if !checkMirrorOf(t, so.config(), gen, "two instances") {
		t.Fatalf("no table in namespace %s\n%s", mirrorNamespace, so.logs("a", "b"))
	}
	// The command line's view of one mirror table.
	name := gen.Tables()[1]
	out, err := runLakehouse(t, "scan", "--catalog-uri", so.dsn, "--warehouse", so.warehouse, "--table", name, "--mirror", "--json", "--limit", "0")
	if err != nil {
		t.Fatalf("scan --mirror --json: %v\n%s", err, out)
	}
	want := gen.Model().Rows(name)
	got := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("scan line %q: %v", l, err)
		}
		id, _ := m["row_id"].(string)
		w, ok := want[id]
		if !ok {
			t.Errorf("scan --mirror: key %q is not in the model", id)
			continue
		}
		if m["_source_id"] != w.SourceID || m["_entry_seq"] != float64(w.EntrySeq) {
			t.Errorf("scan --mirror: key %q holds %v/%v, model %s/%d", id, m["_source_id"], m["_entry_seq"], w.SourceID, w.EntrySeq)
		}
		got++
	}
	if got != len(want) {
		t.Errorf("scan --mirror printed %d rows of %s, model %d", got, name, len(want))
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// runLakehouse runs the lakehouse binary and returns its standard output
// (and standard error after it when it fails).
func runLakehouse(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(lakehouseBin(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String() + errOut.String(), err
	}
	return out.String(), nil
}
