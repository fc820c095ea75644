package client

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Redirects (multi-instance mode, docs/scale-out.md): an instance that does
// not own the source answers the connect with Redirect naming the owner's
// address. A client made with Dial owns its connection and knows how to make
// another one (the same dial options), so it dials the owner and connects
// there at once. A client made with New over the caller's connection cannot
// reach another address: it treats a redirect as an Unavailable connect
// (backoff, then connect again through the same connection, which a load
// balancer may route elsewhere, or which succeeds once the lease moves).
//
// Bounds: at most maxRedirects redirects are followed in a row without a
// Connected; one more counts as a failed attempt (backoff, and the streak
// starts again), so two instances that name each other cannot loop. A
// redirect target that fails before Connected (unreachable, dead, too slow)
// is dropped and the next attempt goes at once to the address given to Dial;
// a target that is up keeps serving reconnects until it fails.

// errRedirected ends a session answered with Redirect that is followed: the
// run loop connects again at once, without backoff.
var errRedirected = errors.New("client: redirected to the source's owner")

// errRedirectFailed ends a session whose redirect target failed before
// Connected: the run loop connects again at once, to the original address.
var errRedirectFailed = errors.New("client: redirect target failed; back to the original address")

// redirectTarget is the connection a followed redirect opened. Only the run
// goroutine changes it, under c.mu (Flush reads it).
type redirectTarget struct {
	addr string
	conn *grpc.ClientConn
	rpc  lakehousev1.CDCServiceClient
}

// streamRPC returns the client for the next stream (the redirect target's,
// if any) and the target's address ("" for the original).
func (c *Client) streamRPC() (lakehousev1.CDCServiceClient, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.redir != nil {
		return c.redir.rpc, c.redir.addr
	}
	return c.rpc, ""
}

// followRedirect handles a Redirect answer. It returns errRedirected when
// the client dialed the owner, or an error to treat as a failed attempt.
func (c *Client) followRedirect(r *lakehousev1.Redirect) error {
	addr := r.GetAddr()
	c.mu.Lock()
	c.st.redirects++
	c.mu.Unlock()
	switch {
	case c.owned == nil:
		return fmt.Errorf("client: source %q is owned by the instance at %q (redirects are followed only by clients made with Dial)", c.sourceID, addr)
	case addr == "":
		return errors.New("client: redirect without an address")
	case c.redirStreak >= c.cfg.maxRedirects:
		c.redirStreak = 0
		c.closeRedirect()
		return fmt.Errorf("client: more than %d redirects in a row (last to %q); backing off", c.cfg.maxRedirects, addr)
	}
	c.redirStreak++
	if _, cur := c.streamRPC(); cur == addr {
		return errRedirected
	}
	conn, err := c.dialTarget(addr)
	if err != nil {
		c.closeRedirect()
		return fmt.Errorf("client: follow redirect to %q: %w", addr, err)
	}
	c.closeRedirect()
	c.mu.Lock()
	c.redir = &redirectTarget{addr: addr, conn: conn, rpc: lakehousev1.NewCDCServiceClient(withTokenConn(conn, c.cfg.token))}
	c.mu.Unlock()
	c.log.Info("client: following redirect to the source's owner", "addr", addr, "owner", r.GetOwner(), "streak", c.redirStreak)
	return errRedirected
}

// dialTarget opens a connection to addr with Dial's options.
func (c *Client) dialTarget(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, c.cfg.ownDialOptions()...)
}

// redirectFailed drops the redirect target after a connect to it failed;
// addr is the target the session used ("" for the original address).
func (c *Client) redirectFailed(addr string, err error) error {
	if addr == "" {
		return err
	}
	c.log.Warn("client: redirect target failed; connecting to the original address", "addr", addr, "err", err)
	c.closeRedirect()
	return fmt.Errorf("%w: %w", errRedirectFailed, err)
}

// closeRedirect closes the redirect target's connection, if any.
func (c *Client) closeRedirect() {
	c.mu.Lock()
	r := c.redir
	c.redir = nil
	c.mu.Unlock()
	if r != nil {
		if err := r.conn.Close(); err != nil {
			c.log.Debug("client: closing redirect connection", "err", err)
		}
	}
}
