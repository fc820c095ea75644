package integration

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/icebergcheck"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// mirrorNamespace is where the mirror tables live (the mirror contract:
// the CDC namespace + "_current").
const mirrorNamespace = "cdc_current"

// mirrorCompactAt is the servers' --mirror-compact-delete-files: low, so
// that the background compaction runs during the runs (and the kills), and
// mirrorCompactSlack the delete files a partition may gain beyond it while
// a compaction pass runs (the commits made meanwhile).
const mirrorCompactAt, mirrorCompactSlack = 2, 3

// keyedSender sends keyed batches one at a time, each acknowledged (in the
// server's log) before the next is sent, so the server receives the
// changes in the order generated: the order the model's state assumes. It
// survives server restarts: on any error it reconnects every source and
// skips the batches the server's connected.last_sequence says it has.
type keyedSender struct {
	cc      *grpc.ClientConn
	streams map[string]*keyedStream
	durable map[string]uint64 // the server's last sequence per source, as of its connect
	resends int
}

type keyedStream struct {
	st     lakehousev1.CDCService_StreamClient
	cancel context.CancelFunc
}

func newKeyedSender(t *testing.T, addr string) *keyedSender {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s := &keyedSender{cc: cc, streams: map[string]*keyedStream{}, durable: map[string]uint64{}}
	t.Cleanup(func() { s.reset(); cc.Close() })
	return s
}

func (s *keyedSender) reset() {
	for id, ks := range s.streams {
		ks.cancel()
		delete(s.streams, id)
	}
}

func (s *keyedSender) stream(ctx context.Context, source string) (*keyedStream, error) {
	if ks := s.streams[source]; ks != nil {
		return ks, nil
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := lakehousev1.NewCDCServiceClient(s.cc).Stream(sctx)
	if err == nil {
		err = st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}})
	}
	var r *lakehousev1.StreamResponse
	if err == nil {
		r, err = st.Recv()
	}
	if err == nil && r.GetConnected() == nil {
		err = fmt.Errorf("%s: first answer %v, want connected", source, r)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s.durable[source] = r.GetConnected().GetLastSequence()
	ks := &keyedStream{st: st, cancel: cancel}
	s.streams[source] = ks
	return ks, nil
}

// send delivers one batch, retrying through refusals and restarts until
// the server has it or ctx ends.
func (s *keyedSender) send(ctx context.Context, b workload.KeyedBatch) error {
	frame, err := codec.EncodeBatch(&codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: b.Sequence,
		SourceID: []byte(b.SourceID), Entries: b.Entries})
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("batch %d of %s: %w", b.Sequence, b.SourceID, err)
		}
		if attempt > 0 {
			s.resends++
		}
		ks, err := s.stream(ctx, b.SourceID)
		if err == nil {
			if b.Sequence <= s.durable[b.SourceID] {
				return nil // the server has it (its ack was lost in a crash)
			}
			if b.Sequence > s.durable[b.SourceID]+1 {
				return fmt.Errorf("%s: the server has batches up to %d, batch %d comes next: a batch was lost", b.SourceID, s.durable[b.SourceID], b.Sequence)
			}
			var delay time.Duration
			if delay, err = sendOne(ks.st, frame); err == nil {
				s.durable[b.SourceID] = b.Sequence
				return nil
			}
			if delay > 0 {
				time.Sleep(delay)
				continue // refused: the stream stays up
			}
		}
		s.reset() // the server went away: reconnect everything
		time.Sleep(50 * time.Millisecond)
	}
}

// sendOne sends a frame and waits for its answer: nil for an ack, the
// retry delay of a retryable nack, an error otherwise.
func sendOne(st lakehousev1.CDCService_StreamClient, frame []byte) (time.Duration, error) {
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
		return 0, err
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return 0, err
		}
		if r.GetAck() != nil {
			return 0, nil
		}
		if n := r.GetNack(); n != nil {
			if n.GetShouldRetry() {
				return max(time.Duration(n.GetRetryDelayMs())*time.Millisecond, 10*time.Millisecond), nackError{n}
			}
			return 0, nackError{n}
		}
	}
}

type mirrorRunConfig struct {
	batches, keys, batchSize, sources int
	kills                             int
}

func mirrorConfig(kills int) mirrorRunConfig {
	c := mirrorRunConfig{batches: 60, keys: 2000, batchSize: 200, sources: 3, kills: kills}
	if os.Getenv("LAKEHOUSE_MIRROR_LONG") != "" {
		c.batches, c.keys, c.batchSize = 600, 20000, 1000
	}
	return c
}

func mirrorSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LAKEHOUSE_MIRROR_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("LAKEHOUSE_MIRROR_SEED: %v", err)
		}
	}
	t.Logf("seed %d (LAKEHOUSE_MIRROR_SEED repeats it)", seed)
	return seed
}

// TestMirrorMatchesModel streams the keyed workload (several sources,
// overlapping keys, event times going backwards across sources, new fields
// and type changes) through lakehouse serve and checks the mirror tables
// against the model, read both with iceberg-go's scan and independently
// (icebergcheck): once mid-run after a flush on request, and after the final
// flush of a graceful stop. The changelog must hold every change exactly
// once. It skips the mirror checks while the server writes no mirror tables.
func TestMirrorMatchesModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	mirrorRun(t, mirrorConfig(0))
}

// TestMirrorKill9 is TestMirrorMatchesModel with the server killed (SIGKILL)
// while the changes stream, and restarted: the replay of its log must apply
// no change twice, so the mirror still equals the model.
func TestMirrorKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	mirrorRun(t, mirrorConfig(3))
}

func mirrorRun(t *testing.T, rc mirrorRunConfig) {
	seed := mirrorSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	gen, err := workload.NewKeyed(workload.KeyedConfig{Seed: seed, Keys: rc.keys, Sources: rc.sources, BatchSize: rc.batchSize})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	// One table's schema is pinned: another key column name and fixed
	// types (the workload's type changes then land in _extra).
	schemas := filepath.Join(dir, "schemas.yaml")
	if err := os.WriteFile(schemas, []byte("tables:\n  "+gen.Tables()[0]+":\n    key: pk\n    columns: {age: int, score: double, updated_at: timestamptz, note: string}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", httpAddr,
		"--sink", "iceberg", "--mirror", "--mirror-infer-timestamps", "--mirror-schemas", schemas,
		"--flush-interval", "300ms", "--flush-entries", "3000", "--log-level", "warn",
		"--mirror-compact-delete-files", strconv.Itoa(mirrorCompactAt)}
	p := startProc(t, addr, logPath, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	sender := newKeyedSender(t, addr)
	made := map[string]uint64{} // entries made per source
	var progress atomic.Int64   // batches sent
	pace := time.Duration(0)
	if rc.kills > 0 {
		pace = 10 * time.Millisecond // let commits happen between the kills
	}
	sendAll := func(n int) error {
		for range n {
			b := gen.Next()
			made[b.SourceID] += uint64(len(b.Entries))
			if err := sender.send(ctx, b); err != nil {
				return err
			}
			progress.Add(1)
			time.Sleep(pace)
		}
		return nil
	}
	if rc.kills == 0 {
		if err := sendAll(rc.batches / 2); err != nil {
			t.Fatal(err)
		}
		// Mid-run: a flush on request commits everything acknowledged.
		r, err := lakehousev1.NewCDCServiceClient(sender.cc).Flush(ctx, &lakehousev1.FlushRequest{})
		if err != nil || !r.GetResult().GetSuccess() {
			t.Fatalf("flush: %v %v\n%s", r, err, readLog(t, logPath))
		}
		if !checkMirror(t, dataDir, gen, "mid-run") {
			t.Logf("mid-run: no table in namespace %s", mirrorNamespace)
		}
		if err := sendAll(rc.batches - rc.batches/2); err != nil {
			t.Fatal(err)
		}
	} else {
		done := make(chan error, 1)
		go func() { done <- sendAll(rc.batches) }()
		// Kill at random points of the stream (by batches sent), a few ms
		// after the point so a batch is often in flight.
		var at []int
		for range rc.kills {
			at = append(at, rc.batches/10+rng.IntN(rc.batches*8/10))
		}
		slices.Sort(at)
		kills := 0
		for _, k := range at {
			for progress.Load() < int64(k) && len(done) == 0 {
				time.Sleep(2 * time.Millisecond)
			}
			if len(done) > 0 {
				break
			}
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			p.kill()
			kills++
			p = startProc(t, addr, logPath, args...)
		}
		if err := <-done; err != nil {
			t.Fatalf("after %d kills: %v\n%s", kills, err, readLog(t, logPath))
		}
		t.Logf("%d kills while streaming, %d send attempts repeated", kills, sender.resends)
		if kills == 0 {
			t.Error("the stream ended before the first kill: make the run longer")
		}
	}
	sender.reset()
	waitMirrorCompactionIdle(t, httpAddr)
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	checkChangelogOnce(t, dataDir, gen.Tables(), made)
	hasMirror := checkMirror(t, dataDir, gen, "final")
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
	if !hasMirror {
		t.Fatalf("no table in namespace %s: the server wrote no mirror tables", mirrorNamespace)
	}
}

// checkChangelogOnce checks that the changelog tables hold each change made
// exactly once.
func checkChangelogOnce(t *testing.T, dataDir string, tables []string, made map[string]uint64) {
	t.Helper()
	checkChangelogOnceOf(t, iceberg.Config{DataDir: dataDir, Logger: slog.New(slog.DiscardHandler)}, tables, made)
}

// checkChangelogOnceOf is checkChangelogOnce on the catalog cfg describes.
func checkChangelogOnceOf(t *testing.T, cfg iceberg.Config, tables []string, made map[string]uint64) {
	t.Helper()
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	seen := map[string]map[uint64]int{}
	total := 0
	for _, name := range tables {
		recs, err := sk.Scan(ctx, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if seen[r.SourceID] == nil {
				seen[r.SourceID] = map[uint64]int{}
			}
			seen[r.SourceID][r.EntrySeq]++
			total++
		}
	}
	var want uint64
	for src, n := range made {
		want += n
		for q := uint64(1); q <= n; q++ {
			if c := seen[src][q]; c != 1 {
				t.Errorf("changelog: %s entry %d stored %d times", src, q, c)
			}
		}
	}
	if uint64(total) != want {
		t.Errorf("changelog: %d rows, %d changes made", total, want)
	}
}

// checkMirror compares every mirror table with the model, through
// iceberg-go's scan and through icebergcheck's own reader, and checks that
// each mirror table carries its changelog table's watermarks. It returns
// false, checking nothing, when the server wrote no mirror table.
func checkMirror(t *testing.T, dataDir string, gen *workload.Keyed, label string) bool {
	t.Helper()
	return checkMirrorOf(t, iceberg.Config{DataDir: dataDir, Logger: slog.New(slog.DiscardHandler)}, gen, label)
}

// checkMirrorOf is checkMirror on the catalog base describes (its
// Namespace is ignored).
func checkMirrorOf(t *testing.T, base iceberg.Config, gen *workload.Keyed, label string) bool {
	t.Helper()
	ctx := context.Background()
	mcfg, ccfg := base, base
	mcfg.Namespace, ccfg.Namespace = mirrorNamespace, ""
	mk, err := iceberg.Open(ctx, mcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	infos, err := mk.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 {
		return false
	}
	cl, err := iceberg.Open(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	clInfos, err := cl.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changelogWM := map[string]any{}
	for _, in := range clInfos {
		changelogWM[in.Name] = in.Watermarks
	}
	for _, in := range infos {
		if !reflect.DeepEqual(any(in.Watermarks), changelogWM[in.Name]) {
			t.Errorf("%s: mirror %s.%s watermarks %v, changelog's %v", label, mirrorNamespace, in.Name, in.Watermarks, changelogWM[in.Name])
		}
	}
	for _, name := range gen.Tables() {
		want := gen.Model().Rows(name)
		tbl, err := mk.LoadTable(ctx, name)
		if err != nil {
			t.Errorf("%s: %v", label, err)
			continue
		}
		own, err := icebergcheck.ReadTable(ctx, tbl)
		if err != nil {
			t.Fatalf("%s: independent read of %s: %v", label, name, err)
		}
		icebergcheck.CompareMirrorKey(t, fmt.Sprintf("%s.%s (%s, own reader)", mirrorNamespace, name, label), own.KeyColumn(), own.Rows, want)
		scan, err := icebergcheck.ScanTable(ctx, tbl)
		if err != nil {
			t.Fatalf("%s: scan of %s: %v", label, name, err)
		}
		icebergcheck.CompareMirrorKey(t, fmt.Sprintf("%s.%s (%s, iceberg-go scan)", mirrorNamespace, name, label), scan.KeyColumn(), scan.Rows, want)
		ts, err := icebergcheck.ReadTombstones(ctx, tbl)
		if err != nil {
			t.Fatalf("%s: tombstones of %s: %v", label, name, err)
		}
		if d := icebergcheck.DiffTombstones(ts, gen.Model(), name); len(d) > 0 {
			t.Errorf("%s: %s: %d tombstone differences, first: %s", label, name, len(d), d[0])
		}
		if name == gen.Tables()[0] && own.KeyColumn() != "pk" {
			t.Errorf("%s: %s: key column %q, pinned pk", label, name, own.KeyColumn())
		}
		t.Logf("%s: %s: %d rows, %d tombstones, %d data files, %d equality delete files (at most %d in a partition)", label, name,
			len(own.Rows), len(ts), own.DataFiles, own.EqualityDeleteFiles, own.MaxPartitionDeleteFiles)
		if own.MaxPartitionDeleteFiles > mirrorCompactAt+mirrorCompactSlack {
			t.Errorf("%s: %s: %d delete files in a partition; compaction runs at %d", label, name, own.MaxPartitionDeleteFiles, mirrorCompactAt)
		}
		if len(ts) == 0 {
			t.Errorf("%s: %s: no tombstones: the run deleted nothing", label, name)
		}
	}
	return true
}

// waitMirrorCompactionIdle waits until the server's background mirror
// compaction has committed nothing for a few seconds. It yields to commit
// passes for up to a minute (they ran back to back on a slow machine, with
// 300-ms flushes), and a kill drops its queue, so a partition's delete
// files can pass the bound while ingest runs; once the stream ends it
// catches up, and the graceful stop does not wait for it.
func waitMirrorCompactionIdle(t *testing.T, httpAddr string) {
	t.Helper()
	const quiet = 3 * time.Second
	last, since := -1.0, time.Now()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		n := scrapeMetrics(t, httpAddr)["lakehouse_mirror_compactions_total"]
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			t.Logf("mirror compactions: %v, none in the last %v", n, quiet)
			return
		}
	}
	t.Logf("mirror compactions: %v, still running after a minute", last)
}
