package wsbridge

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// DefaultMaxRedirects bounds the redirects followed for one upstream open:
// ownership may move between a Redirect and the next connect, and two
// instances must not bounce a child forever.
const DefaultMaxRedirects = 3

// Legacy children cannot follow a Redirect (their protocol has none), so the
// bridge does it for them (Config.DialRedirect): it connects the child's
// source at the owner's address, through one connection per address shared
// by every child. A target that fails sends that open back to the
// configured upstream once; a Redirect then is an error, and the child
// reconnects as after any upstream failure. Every later open starts at the
// configured upstream again, so a dead owner costs one failed attempt.

// redirectConns are the connections to redirect targets, by address.
type redirectConns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	done  bool
}

// followRedirect returns the client for the Redirect's address, or an error
// when redirects are not followed or hops reached the bound.
func (b *Bridge) followRedirect(r *lakehousev1.Redirect, hops int) (lakehousev1.CDCServiceClient, error) {
	addr := r.GetAddr()
	switch {
	case b.cfg.DialRedirect == nil:
		return nil, fmt.Errorf("source %q is owned by the instance at %q (this bridge does not follow redirects)", r.GetSourceId(), addr)
	case addr == "":
		return nil, fmt.Errorf("redirect without an address for source %q", r.GetSourceId())
	case hops >= b.cfg.MaxRedirects:
		return nil, fmt.Errorf("more than %d redirects in a row for source %q (last to %q)", b.cfg.MaxRedirects, r.GetSourceId(), addr)
	}
	rc := &b.redirects
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.done {
		return nil, errClosed
	}
	cc := rc.conns[addr]
	if cc == nil {
		var err error
		if cc, err = b.cfg.DialRedirect(addr); err != nil {
			return nil, fmt.Errorf("follow redirect to %q: %w", addr, err)
		}
		if rc.conns == nil {
			rc.conns = make(map[string]*grpc.ClientConn)
		}
		rc.conns[addr] = cc
	}
	b.log.Debug("following redirect", "source", r.GetSourceId(), "addr", addr, "owner", r.GetOwner())
	return lakehousev1.NewCDCServiceClient(cc), nil
}

// closeRedirects closes the redirect targets' connections (Close).
func (b *Bridge) closeRedirects() {
	rc := &b.redirects
	rc.mu.Lock()
	conns := rc.conns
	rc.conns, rc.done = nil, true
	rc.mu.Unlock()
	for addr, cc := range conns {
		if err := cc.Close(); err != nil {
			b.log.Debug("closing redirect connection", "addr", addr, "error", err)
		}
	}
}
