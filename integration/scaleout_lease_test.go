//go:build unix

package integration

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
)

// proxiedDSN puts a fault proxy between the instances and PostgreSQL:
// so.dsn is rewritten to go through it.
func (so *scaleOut) proxiedDSN() *faultproxy.Proxy {
	t := so.t
	u, err := url.Parse(so.dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	so.dsn = u.String()
	return p
}

// rawStream is one stream of a source, sending batches one at a time.
type rawStream struct {
	t   *testing.T
	src *resumingSource
	st  grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]
}

// openRaw connects src to addr and returns the stream and
// connected.last_sequence.
func openRaw(t *testing.T, ctx context.Context, addr string, src *resumingSource) (*rawStream, uint64) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: src.id}}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil || r.GetConnected() == nil {
		t.Fatalf("connect %s: %v %v", src.id, r, err)
	}
	return &rawStream{t: t, src: src, st: st}, r.GetConnected().GetLastSequence()
}

// send sends batch seq and returns the answer: an ack or nack response, or
// the stream's end.
func (rs *rawStream) send(seq uint64) (*lakehousev1.StreamResponse, error) {
	rs.src.mu.Lock()
	f := rs.src.frame(seq)
	rs.src.mu.Unlock()
	if err := rs.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}); err != nil {
		_, err = rs.st.Recv()
		return nil, err
	}
	for {
		r, err := rs.st.Recv()
		if err != nil || r.GetAck() != nil || r.GetNack() != nil {
			return r, err
		}
	}
}

// TestScaleOutLeaseExpiredAtAccept: an instance that cannot renew its
// source's lease (PostgreSQL unreachable behind a stalled proxy) stops
// accepting the source's batches once the lease's TTL has passed since its
// last renewal: the stream ends with UNAVAILABLE naming the expired lease,
// instead of acking `ok` batches that another instance (which may own the
// source by now) would make uncommittable here. Once PostgreSQL is back the
// source reconnects to the same instance, which still owns it, and goes on.
func TestScaleOutLeaseExpiredAtAccept(t *testing.T) {
	so := newScaleOut(t)
	pg := so.proxiedDSN()
	a, addr := so.start("a", "--flush-interval", "1h", "--flush-age", "1h", "--lease-ttl", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := newResumingSource("expiry", addr, scaleOutBatch, 1)
	rs, last := openRaw(t, ctx, addr, src)
	if last != 0 {
		t.Fatalf("last_sequence %d", last)
	}
	// Renewed every ttl/3: batches over more than a TTL are all acked.
	for seq := uint64(1); seq <= 6; seq++ {
		r, err := rs.send(seq)
		if err != nil || r.GetAck() == nil {
			t.Fatalf("batch %d before the fault: %v %v\n%s", seq, r, err, so.logs("a"))
		}
		time.Sleep(500 * time.Millisecond)
	}

	pg.Stall()
	time.Sleep(2500 * time.Millisecond) // past the TTL since the last renewal
	r, err := rs.send(7)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "lease expired") {
		t.Fatalf("batch 7 with the lease expired: answer %v, stream end %v; want the stream ended with UNAVAILABLE naming the expired lease\n%s",
			r, err, so.logs("a"))
	}

	pg.Resume()
	rs, last = openRaw(t, ctx, addr, src)
	if last != 6 {
		t.Errorf("after PostgreSQL came back: last_sequence %d, want 6 (batch 7 was refused)", last)
	}
	for seq := last + 1; seq <= 8; seq++ {
		if r, err := rs.send(seq); err != nil || r.GetAck() == nil {
			t.Fatalf("batch %d after PostgreSQL came back: %v %v\n%s", seq, r, err, so.logs("a"))
		}
	}
	if r := flushRPC(t, addr); !r.GetSuccess() {
		t.Fatalf("flush: %+v", r)
	}
	if err := a.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	for seq := uint64(1); seq <= 8; seq++ {
		src.markAcked(seq)
	}
	src.mu.Unlock()
	checkExactlyOnce(t, []*resumingSource{src}, so.read(), 8*scaleOutBatch)
	if t.Failed() {
		t.Log(so.logs("a"))
	}
}
