//go:build unix

package integration

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// Multi-instance mode (docs/scale-out.md): two `lakehouse serve` processes
// share one PostgreSQL catalog and one warehouse directory, each with its
// own data directory. TestS3PostgresScaleOut uses an S3 bucket instead of
// the directory (props and env set, maintenance on).

const scaleOutBatch = 50

type scaleOut struct {
	t         *testing.T
	dsn       string
	warehouse string
	dir       string
	props     map[string]string // the warehouse's storage properties (--catalog-props)
	env       []string          // extra environment of the processes
	maintain  bool              // run table maintenance (default --no-maintenance)
}

func newScaleOut(t *testing.T) *scaleOut {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	dir := t.TempDir()
	return &scaleOut{t: t, dsn: dsn, dir: dir, warehouse: "file://" + filepath.Join(dir, "warehouse")}
}

// catalogProps formats properties as the value of serve's --catalog-props.
func catalogProps(props map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(props)) {
		kv = append(kv, k+"="+props[k])
	}
	return strings.Join(kv, ",")
}

// start starts instance name with extra flags.
func (so *scaleOut) start(name string, extra ...string) (*proc, string) {
	p, addr := so.launch(name, extra...)
	p.waitHealthy(addr, filepath.Join(so.dir, name+".log"))
	return p, addr
}

// launch is start without waiting until the instance serves.
func (so *scaleOut) launch(name string, extra ...string) (*proc, string) {
	addr := freeAddr(so.t)
	args := append([]string{"serve", "--data-dir", filepath.Join(so.dir, name), "--grpc-addr", addr, "--http-addr", "",
		"--catalog-uri", so.dsn, "--warehouse", so.warehouse, "--coordination", "catalog", "--lease-ttl", "2s",
		// Mirror tables are tested on their own (mirror_test.go,
		// scaleout_mirror_test.go, which give --mirror in extra).
		"--log-level", "info"}, extra...)
	if !so.maintain {
		args = append(args, "--no-maintenance")
	}
	if so.props != nil {
		args = append(args, "--catalog-props", catalogProps(so.props))
	}
	return launchProc(so.t, so.env, filepath.Join(so.dir, name+".log"), args...), addr
}

func (so *scaleOut) logs(names ...string) string {
	out := ""
	for _, n := range names {
		out += "--- " + n + "\n" + readLog(so.t, filepath.Join(so.dir, n+".log")) + "\n"
	}
	return out
}

// config is the sink configuration of a reader of the shared catalog.
func (so *scaleOut) config() iceberg.Config {
	return iceberg.Config{DataDir: so.t.TempDir(), CatalogURI: so.dsn, Warehouse: so.warehouse, Properties: so.props,
		Logger: quietLogger()}
}

// read returns every stored row, read through the shared catalog.
func (so *scaleOut) read() []storedEntry {
	var out []storedEntry
	so.eachTable(context.Background(), func(ctx context.Context, sk *iceberg.Sink, name string) {
		recs, err := sk.Scan(ctx, name, 0)
		if err != nil {
			so.t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, storedEntry{r.SourceID, r.EntrySeq})
		}
	})
	return out
}

// snapshots returns every table's snapshots, oldest first, read through the
// shared catalog (while the instances run, too).
func (so *scaleOut) snapshots(ctx context.Context) map[string][]table.Snapshot {
	out := make(map[string][]table.Snapshot)
	so.eachTable(ctx, func(ctx context.Context, sk *iceberg.Sink, name string) {
		tbl, err := sk.LoadTable(ctx, name)
		if err != nil {
			so.t.Fatal(err)
		}
		out[name] = tbl.Metadata().Snapshots()
	})
	return out
}

// eachTable calls f with each table of the shared catalog.
func (so *scaleOut) eachTable(ctx context.Context, f func(ctx context.Context, sk *iceberg.Sink, name string)) {
	sk, err := iceberg.Open(ctx, so.config())
	if err != nil {
		so.t.Fatal(err)
	}
	defer sk.Close()
	tables, err := sk.Tables(ctx)
	if err != nil {
		so.t.Fatal(err)
	}
	for _, tb := range tables {
		f(ctx, sk, tb.Name)
	}
}

// runAll streams every source to addr up to batch maxBatches.
func runAll(t *testing.T, srcs []*resumingSource, addr string, maxBatches uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan struct{}, len(srcs))
	for _, s := range srcs {
		s.addr = addr
		go func() {
			s.run(ctx, maxBatches)
			done <- struct{}{}
		}()
	}
	for range srcs {
		<-done
	}
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish on %s", addr)
	}
}

// connectedLast connects source id to addr, retrying while another instance
// holds it, and returns connected.last_sequence.
func connectedLast(t *testing.T, addr, id string) uint64 {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
		if err == nil {
			err = st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: id}}})
		}
		var r *lakehousev1.StreamResponse
		if err == nil {
			r, err = st.Recv()
		}
		cancel()
		if err == nil && r.GetConnected() != nil {
			return r.GetConnected().GetLastSequence()
		}
		if err == nil { // Redirect: the owner has not released it yet
			err = status.Errorf(codes.Unavailable, "redirected to %s", r.GetRedirect().GetAddr())
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("connect %s to %s: %v", id, addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func flushRPC(t *testing.T, addr string) *lakehousev1.FlushResult {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := lakehousev1.NewCDCServiceClient(cc).Flush(ctx, &lakehousev1.FlushRequest{})
	if err != nil {
		t.Fatalf("flush %s: %v", addr, err)
	}
	return r.GetResult()
}

// TestScaleOutSourceMoves: sources committed on one instance move to
// another, which tells them the committed last sequence (it never saw them)
// so that they resend nothing twice and nothing is missing.
func TestScaleOutSourceMoves(t *testing.T) {
	so := newScaleOut(t)
	a, addrA := so.start("a", "--flush-interval", "1s")
	b, addrB := so.start("b", "--flush-interval", "1s")
	srcs := make([]*resumingSource, 3)
	for i := range srcs {
		srcs[i] = newResumingSource("move-"+string(rune('a'+i)), addrA, scaleOutBatch, 4)
	}
	runAll(t, srcs, addrA, 20)
	if r := flushRPC(t, addrA); !r.GetSuccess() {
		t.Fatalf("flush on a: %+v", r)
	}
	// a releases the idle sources' leases within a renewal; b refuses
	// them (Unavailable) until then and the sources retry. b never saw
	// the source, yet tells it the committed last sequence.
	if got := connectedLast(t, addrB, srcs[0].id); got != 20 {
		t.Errorf("b: connected.last_sequence %d, want 20", got)
	}
	runAll(t, srcs, addrB, 40)
	if r := flushRPC(t, addrB); !r.GetSuccess() {
		t.Fatalf("flush on b: %+v", r)
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	checkExactlyOnce(t, srcs, so.read(), 40*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// TestScaleOutZombieFenced: an instance holding acked, uncommitted batches is
// paused past its lease; its sources move to another instance, which tells
// them the committed state and takes their resends, not yet committed.
// Resumed, the zombie commits nothing of the moved sources: either its
// commit is fenced in the catalog's transaction or, if its lease renewal
// noticed the move first, it drops their batches. Every entry is stored
// exactly once.
func TestScaleOutZombieFenced(t *testing.T) {
	so := newScaleOut(t)
	a, addrA := so.start("a", "--flush-interval", "1h", "--flush-age", "1h")
	b, addrB := so.start("b", "--flush-interval", "1h", "--flush-age", "1h")
	srcs := make([]*resumingSource, 3)
	for i := range srcs {
		srcs[i] = newResumingSource("zombie-"+string(rune('a'+i)), addrA, scaleOutBatch, 4)
	}
	runAll(t, srcs, addrA, 10) // acked ok on a, not committed
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the 2 s lease
	runAll(t, srcs, addrB, 20)  // acked on b, not committed
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	r1 := flushRPC(t, addrA)
	t.Logf("zombie flush: %+v", r1)
	// The next one has nothing left of the moved sources.
	if r := flushRPC(t, addrA); !r.GetSuccess() || r.GetEntriesFlushed() != 0 {
		t.Errorf("second zombie flush: %+v", r)
	}
	if stored := so.read(); len(stored) != 0 {
		t.Errorf("the zombie committed %d rows of moved sources", len(stored))
	}
	logA := readLog(t, filepath.Join(so.dir, "a.log"))
	fencedInCatalog := strings.Contains(r1.GetError(), "fenced")
	if !fencedInCatalog && !strings.Contains(logA, "dropped batches of sources that moved") {
		t.Errorf("the zombie neither was fenced nor dropped the moved batches")
	}
	t.Logf("fenced in the catalog's transaction: %v", fencedInCatalog)
	if r := flushRPC(t, addrB); !r.GetSuccess() {
		t.Fatalf("flush on b: %+v", r)
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	checkExactlyOnce(t, srcs, so.read(), 20*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}
