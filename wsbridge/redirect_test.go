package wsbridge

import (
	"slices"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func dialRedirect(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// A legacy child whose source another instance owns is bridged to the
// owner: its entries are stored there, the configured upstream stores none.
func TestRedirectFollowedForLegacyChild(t *testing.T) {
	owner, other := newFakeServer(), newFakeServer()
	ownerCC := startFake(t, owner)
	other.redirectTo = ownerCC.Target()
	env := newEnv(t, startFake(t, other), func(c *Config) { c.DialRedirect = dialRedirect })
	c := env.dial(t, nil)
	connect(t, c, "child-1", "shard-1")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("child-1", "k1", 1, 1, 5)))
	if a, _ := recvAck(t, c); a.Sequence != 1 {
		t.Fatalf("ack %+v", a)
	}
	if got := owner.entrySeqs("child-1"); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("owner stored %v", got)
	}
	if got := other.entrySeqs("child-1"); len(got) != 0 {
		t.Fatalf("the redirecting upstream stored %v", got)
	}
}

// A redirect target that does not answer sends the open back to the
// configured upstream, which serves the child.
func TestRedirectTargetDownFallsBackForLegacyChild(t *testing.T) {
	srv := newFakeServer()
	srv.redirectTo, srv.redirectN = "127.0.0.1:1", 1
	env := newEnv(t, startFake(t, srv), func(c *Config) { c.DialRedirect = dialRedirect })
	c := env.dial(t, nil)
	connect(t, c, "child-1", "shard-1")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("child-1", "k1", 1, 1, 3)))
	if a, _ := recvAck(t, c); a.Sequence != 1 {
		t.Fatalf("ack %+v", a)
	}
	if got := srv.entrySeqs("child-1"); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("stored %v", got)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.connects != 2 {
		t.Fatalf("%d connects, want 2 (redirected, then served)", srv.connects)
	}
}

// Two upstreams naming each other: the open fails after the bound instead
// of looping.
func TestRedirectLoopBoundedForLegacyChild(t *testing.T) {
	a, b := newFakeServer(), newFakeServer()
	acc, bcc := startFake(t, a), startFake(t, b)
	a.redirectTo, b.redirectTo = bcc.Target(), acc.Target()
	env := newEnv(t, acc, func(c *Config) { c.DialRedirect = dialRedirect; c.MaxRedirects = 2 })
	c := env.dial(t, nil)
	connect(t, c, "child-1", "shard-1")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("child-1", "k1", 1, 1, 3)))
	recvNack(t, c)
	a.mu.Lock()
	b.mu.Lock()
	n := a.connects + b.connects
	b.mu.Unlock()
	a.mu.Unlock()
	// Two opens (at the connect message, again at the batch), each at most
	// 1 connect + 2 followed redirects.
	if n > 2*3 {
		t.Fatalf("%d connects for two opens, want at most 6", n)
	}
}
