//go:build unix

package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/client"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestScaleOutRedirect: a source streaming to instance a (which holds its
// lease) is connected through instance b by a new Go client: b answers
// Redirect with a's advertised address, the client lands on a (taking over
// the source's stream there), and every entry is stored exactly once; b
// accepted nothing.
func TestScaleOutRedirect(t *testing.T) {
	so := newScaleOut(t)
	a, addrA := so.start("a", "--flush-interval", "1s")
	b, addrB := so.start("b", "--flush-interval", "1s")
	const id, n1, n2, batch = "redirect-src", 300, 300, 50
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := []client.Option{client.WithMaxBatchEntries(batch)}

	first, err := client.Dial(ctx, addrA, id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SendMany(ctx, workload.Entries(0, n1)); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Flush(ctx); err != nil {
		t.Fatalf("flush through a: %v", err)
	}
	// first stays connected: a holds the lease. A client of b lands on a.
	second, err := client.Dial(ctx, addrB, id, opts...)
	if err != nil {
		t.Fatalf("dial b: %v\n%s", err, so.logs("a", "b"))
	}
	if st := second.Stats(); st.Redirects != 1 || st.RedirectAddr != addrA {
		t.Fatalf("redirects %d to %q, want 1 to a (%s)", st.Redirects, st.RedirectAddr, addrA)
	}
	if err := second.SendMany(ctx, workload.Entries(n1, n2)); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Flush(ctx); err != nil {
		t.Fatalf("flush through the redirect: %v", err)
	}
	if st := second.Stats(); st.EntriesAcked != n2 || st.Duplicates != 0 {
		t.Fatalf("second client: %d entries acked, %d duplicate batches", st.EntriesAcked, st.Duplicates)
	}
	if err := second.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	// The stream on a was taken over by the redirected client.
	if err := first.Close(ctx); !errors.Is(err, client.ErrFenced) {
		t.Errorf("first client: %v, want fenced", err)
	}
	for _, s := range statusOf(t, addrB).GetSources() {
		if s.GetSourceId() == id && s.GetBatchesReceived() > 0 {
			t.Errorf("b accepted %d batches of the redirected source", s.GetBatchesReceived())
		}
	}
	for _, p := range []*proc{a, b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v\n%s", err, so.logs("a", "b"))
		}
	}
	counts := make(map[uint64]int)
	for _, r := range so.read() {
		if r.source == id {
			counts[r.entry]++
		}
	}
	want := workload.Entries(0, n1+n2)
	for _, e := range want {
		if c := counts[e.Sequence]; c != 1 {
			t.Errorf("entry %d stored %d times", e.Sequence, c)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("%d distinct entries stored, want %d", len(counts), len(want))
	}
	if t.Failed() {
		t.Log(so.logs("a", "b"))
	}
}

func statusOf(t *testing.T, addr string) *lakehousev1.ServerStatus {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lakehousev1.NewCDCServiceClient(cc).GetStatus(ctx, &lakehousev1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("status %s: %v", addr, err)
	}
	return r.GetStatus()
}
