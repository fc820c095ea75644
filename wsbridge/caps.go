package wsbridge

import (
	"fmt"
	"net"
	"net/http"
)

// connCaps counts the WebSocket connections admitted (from the upgrade
// until the connection ends), in total and per remote IP address, under
// Bridge.mu. Counting from the upgrade, not from when the socket joins
// Bridge.conns, keeps concurrent upgrades from overshooting a cap.
type connCaps struct {
	total  int
	byAddr map[string]int
}

// admit counts an upgrade request, or returns why it is refused (503).
// release ends the count; call it once.
func (b *Bridge) admit(r *http.Request) (release func(), refusal string) {
	addr := remoteIP(r.RemoteAddr)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, "bridge shutting down"
	case b.cfg.MaxConnections > 0 && b.caps.total >= b.cfg.MaxConnections:
		b.log.Debug("websocket refused: connection cap reached", "remote", r.RemoteAddr, "limit", b.cfg.MaxConnections)
		return nil, fmt.Sprintf("too many WebSocket connections: the bridge's limit of %d (max-ws-conns) is reached; retry later", b.cfg.MaxConnections)
	case b.cfg.MaxConnectionsPerAddr > 0 && b.caps.byAddr[addr] >= b.cfg.MaxConnectionsPerAddr:
		b.log.Debug("websocket refused: per-address connection cap reached", "remote", r.RemoteAddr, "limit", b.cfg.MaxConnectionsPerAddr)
		return nil, fmt.Sprintf("too many WebSocket connections from %s: the bridge's limit of %d per address (max-ws-conns-per-addr) is reached; retry later",
			addr, b.cfg.MaxConnectionsPerAddr)
	}
	if b.caps.byAddr == nil {
		b.caps.byAddr = make(map[string]int)
	}
	b.caps.total++
	b.caps.byAddr[addr]++
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.caps.total--
		if b.caps.byAddr[addr]--; b.caps.byAddr[addr] <= 0 {
			delete(b.caps.byAddr, addr)
		}
	}, ""
}

// remoteIP is the IP address of a request's RemoteAddr (host:port), or
// RemoteAddr itself when it has no port.
func remoteIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}
