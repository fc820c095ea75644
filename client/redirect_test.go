package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
)

// A connect to an instance that does not own the source lands on the owner:
// every entry is stored there once, the redirecting server stores nothing.
func TestRedirectFollowed(t *testing.T) {
	owner, other := startFake(t), startFake(t)
	other.redirect(owner.Addr(), 0)
	c := dialTest(t, other.Addr(), "src", WithMaxBatchEntries(50))
	if err := c.SendMany(context.Background(), testEntries(0, 200)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Flush goes to the instance that holds the source's batches.
	if _, err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, flushes := owner.counts(); flushes != 1 {
		t.Fatalf("%d flushes reached the owner, want 1", flushes)
	}
	st := c.Stats()
	if st.Redirects != 1 || st.RedirectAddr != owner.Addr() {
		t.Fatalf("redirects %d to %q, want 1 to %q", st.Redirects, st.RedirectAddr, owner.Addr())
	}
	if err := closeTest(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantRange(t, "owner's entries", owner.entrySeqs("src"), 1, 200)
	if got := other.entrySeqs("src"); len(got) != 0 {
		t.Fatalf("the redirecting server stored %d entries", len(got))
	}
	if oc, _, _ := other.counts(); oc != 1 {
		t.Fatalf("the redirecting server saw %d connects, want 1", oc)
	}
}

// Two servers naming each other: the client follows a bounded number of
// redirects per attempt and gives up after its reconnect attempts.
func TestRedirectLoopBounded(t *testing.T) {
	a, b := startFake(t), startFake(t)
	a.redirect(b.Addr(), 0)
	b.redirect(a.Addr(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const attempts = 2
	opts := append(fastOpts(t), WithReconnect(10*time.Millisecond, attempts), WithMaxRedirects(2))
	c, err := Dial(ctx, a.Addr(), "src", opts...)
	if err == nil {
		_ = closeTest(t, c)
		t.Fatal("Dial succeeded through a redirect loop")
	}
	if !strings.Contains(err.Error(), "redirects in a row") {
		t.Fatalf("Dial: %v, want the redirect bound", err)
	}
	ca, _, _ := a.counts()
	cb, _, _ := b.counts()
	// Each attempt: 1 connect + 2 followed redirects + the refused one.
	if max := (attempts + 1) * 3; ca+cb > max {
		t.Fatalf("%d connects, want at most %d", ca+cb, max)
	}
}

// A redirect to an address that does not answer falls back to the
// original address at once.
func TestRedirectTargetDownFallsBack(t *testing.T) {
	srv := startFake(t)
	srv.redirect("127.0.0.1:1", 1)
	c := dialTest(t, srv.Addr(), "src", WithReconnect(time.Hour, 5))
	if err := c.SendMany(context.Background(), testEntries(0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantRange(t, "entries", srv.entrySeqs("src"), 1, 10)
	if st := c.Stats(); st.Redirects != 1 || st.RedirectAddr != "" {
		t.Fatalf("redirects %d, addr %q", st.Redirects, st.RedirectAddr)
	}
}

// The owner dies while the client streams to it: the client goes back to
// the original address, which (the lease moved) now serves the source.
func TestRedirectOwnerDiesFallsBack(t *testing.T) {
	owner, lb := startFake(t), startFake(t)
	lb.redirect(owner.Addr(), 0)
	c := dialTest(t, lb.Addr(), "src", WithMaxBatchEntries(10))
	if err := c.SendMany(context.Background(), testEntries(0, 30)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	owner.stop()
	// The successor knows what the owner committed (as the real server
	// reads it from the lease row).
	lb.forget("src", 3)
	lb.redirect("", 0)
	if err := c.SendMany(context.Background(), testEntries(30, 20)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantRange(t, "owner's entries", owner.entrySeqs("src"), 1, 30)
	wantRange(t, "successor's entries", lb.entrySeqs("src"), 31, 50)
	if st := c.Stats(); st.RedirectAddr != "" {
		t.Fatalf("still redirected to %q", st.RedirectAddr)
	}
}

// A client made with New does not own its connection: it does not follow a
// redirect, and retries through its connection.
func TestRedirectNotFollowedByNew(t *testing.T) {
	owner, other := startFake(t), startFake(t)
	other.redirect(owner.Addr(), 2)
	conn, err := grpc.NewClient(other.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := New(conn, "src", fastOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMany(ctx, testEntries(0, 5)); err != nil {
		t.Fatal(err)
	}
	if err := closeTest(t, c); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("Close: %v", err)
	}
	if oc, _, _ := owner.counts(); oc != 0 {
		t.Fatalf("the owner saw %d connects", oc)
	}
	wantRange(t, "entries", other.entrySeqs("src"), 1, 5)
	if st := c.Stats(); st.Redirects != 2 || st.RedirectAddr != "" {
		t.Fatalf("redirects %d, addr %q", st.Redirects, st.RedirectAddr)
	}
}

// TestRedirectKeepsKeepalive: the connection to the owner a redirect names
// carries the client's keepalive (it did not: only Dial's own connection had
// it), so an owner whose link goes silent is noticed and the client
// reconnects, instead of waiting on TCP for good. Heartbeats are off and no
// batch is in flight, so only the keepalive can notice.
func TestRedirectKeepsKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive timeout (about 12 s)")
	}
	owner := startFake(t)
	p, err := faultproxy.Start(owner.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	other := startFake(t)
	other.redirect(p.Addr(), 0)
	c := dialTest(t, other.Addr(), "src", WithHeartbeatInterval(0), WithKeepalive(MinKeepaliveTime, time.Second))
	if _, err := c.SendBatch(context.Background(), testEntries(0, 10)); err != nil {
		t.Fatal(err)
	}
	before := c.Stats().Reconnects
	p.Blackhole() // the current connection goes silent; new ones work
	deadline := time.Now().Add(MinKeepaliveTime + 10*time.Second)
	for c.Stats().Reconnects == before {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect %v after the owner's link went silent: the redirect connection has no keepalive", MinKeepaliveTime+10*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.SendBatch(context.Background(), testEntries(10, 10)); err != nil {
		t.Fatalf("after the reconnect: %v", err)
	}
	wantRange(t, "owner's entries", owner.entrySeqs("src"), 1, 20)
}
