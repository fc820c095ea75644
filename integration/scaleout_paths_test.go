//go:build unix

package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// TestScaleOutRestartReclaims: an instance killed with acked, uncommitted
// batches restarts on its data directory and reclaims its sources' leases
// at the epochs its log recorded: nobody took them meanwhile, so the
// batches are committed (not dropped as a moved source's), the source
// resumes there from its own state, and another instance redirects it
// there.
func TestScaleOutRestartReclaims(t *testing.T) {
	so := newScaleOut(t)
	a, addrA := so.start("a", "--flush-interval", "1h", "--flush-age", "1h")
	_, addrB := so.start("b", "--flush-interval", "1h", "--flush-age", "1h")
	srcs := []*resumingSource{newResumingSource("reclaim-a", addrA, scaleOutBatch, 4), newResumingSource("reclaim-b", addrA, scaleOutBatch, 4)}
	runAll(t, srcs, addrA, 10) // acked ok, in a's log only
	a.kill()
	a = startProcEnv(t, so.env, addrA, filepath.Join(so.dir, "a.log"), a.args...)
	logA := readLog(t, filepath.Join(so.dir, "a.log"))
	if strings.Contains(logA, "source moved to another instance while this one was down") {
		t.Errorf("a did not reclaim its leases:\n%s", logA)
	}
	// b redirects the source to a, which still owns it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rb := connectAnswer(t, ctx, addrB, srcs[0].id)
	if rb.GetRedirect().GetAddr() != addrA {
		t.Errorf("b: connect answered %v, want a redirect to a (%s)", rb, addrA)
	}
	if got := connectedLast(t, addrA, srcs[0].id); got != 10 {
		t.Errorf("a after the restart: last_sequence %d, want 10 (its own log)", got)
	}
	runAll(t, srcs, addrA, 12)
	if r := flushRPC(t, addrA); !r.GetSuccess() || r.GetBatchesFlushed() != 24 {
		t.Errorf("flush on a: %+v, want the 24 logged batches committed", r)
	}
	if err := a.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, srcs, so.read(), 12*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// connectAnswer connects source id to addr and returns the first answer.
func connectAnswer(t *testing.T, ctx context.Context, addr, id string) *lakehousev1.StreamResponse {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: id}}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, err)
	}
	return r
}

// TestScaleOutLostLeaseClosesStream: an instance that cannot reach
// PostgreSQL while another instance takes its source (the lease expired)
// ends the source's idle stream with ABORTED naming the lost lease as soon
// as its renewal finds the lease gone, and commits nothing of the source.
func TestScaleOutLostLeaseClosesStream(t *testing.T) {
	so := newScaleOut(t)
	direct := so.dsn
	pg := so.proxiedDSN()
	a, addrA := so.start("a", "--flush-interval", "1h", "--flush-age", "1h", "--lease-ttl", "2s")
	so.dsn = direct
	_, addrB := so.start("b", "--flush-interval", "1h", "--flush-age", "1h", "--lease-ttl", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := newResumingSource("lost", addrA, scaleOutBatch, 1)
	rs, _ := openRaw(t, ctx, addrA, src)
	for seq := uint64(1); seq <= 3; seq++ {
		if r, err := rs.send(seq); err != nil || r.GetAck() == nil {
			t.Fatalf("batch %d: %v %v", seq, r, err)
		}
	}
	pg.Stall()
	if got := connectedLast(t, addrB, src.id); got != 0 {
		t.Errorf("b took the source: last_sequence %d, want 0 (nothing committed)", got)
	}
	pg.Resume()
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := rs.st.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "lease was taken by another instance") {
			t.Errorf("a's stream ended with %v, want ABORTED naming the lost lease", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("a's stream still open 20 s after its lease was taken\n%s", so.logs("a", "b"))
	}
	if r := flushRPC(t, addrA); r.GetEntriesFlushed() != 0 {
		t.Errorf("a committed batches of a source it lost: %+v", r)
	}
	if err := a.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(so.read()); n != 0 {
		t.Errorf("%d rows stored, want none (the source's batches were on a, which lost it)", n)
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

// TestReplayUncoordinated: `lakehouse replay` without --coordination
// commits a single instance's log (killed with acked, uncommitted batches
// over committed ones): the watermarks skip what is committed, every entry
// is stored once, and a second replay finds nothing.
func TestReplayUncoordinated(t *testing.T) {
	so := newScaleOut(t)
	dataDir := filepath.Join(so.dir, "single")
	addr := freeAddr(t)
	p := startProcEnv(t, nil, addr, filepath.Join(so.dir, "single.log"), "serve", "--data-dir", dataDir,
		"--grpc-addr", addr, "--http-addr", "", "--catalog-uri", so.dsn, "--warehouse", so.warehouse,
		"--flush-interval", "1h", "--flush-age", "1h", "--no-maintenance")
	srcs := []*resumingSource{newResumingSource("single-a", addr, scaleOutBatch, 4), newResumingSource("single-b", addr, scaleOutBatch, 4)}
	runAll(t, srcs, addr, 5)
	if r := flushRPC(t, addr); !r.GetSuccess() || r.GetBatchesFlushed() != 10 {
		t.Fatalf("flush: %+v", r)
	}
	runAll(t, srcs, addr, 12) // acked ok, not committed
	p.kill()
	replay := func() string {
		cmd := exec.Command(lakehouseBin(t), "replay", "--data-dir", dataDir, "--catalog-uri", so.dsn,
			"--warehouse", so.warehouse, "--timeout", "2m")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := replay(); !strings.Contains(out, ": 14 batches, 700 entries committed; 0 batches dropped") {
		t.Errorf("replay: %q, want the 14 uncommitted batches", out)
	}
	if out := replay(); !strings.Contains(out, ": 0 batches, 0 entries committed") {
		t.Errorf("second replay: %q, want nothing", out)
	}
	checkExactlyOnce(t, srcs, so.read(), 12*scaleOutBatch)
}
