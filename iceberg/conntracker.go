package iceberg

import (
	"context"
	"net"
	"sync"
)

// connTracker keeps the connections a dial function opened, so that the
// sink's Close can close them: the AWS SDK's HTTP client does not expose
// its transport, whose idle connections (two goroutines each) would
// otherwise outlive the sink until their idle timeout.
type connTracker struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newConnTracker() *connTracker {
	return &connTracker{conns: make(map[*trackedConn]struct{})}
}

// dial wraps a transport's dial function; after close it dials nothing.
func (ct *connTracker) dial(next func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, ct: ct}
		ct.mu.Lock()
		defer ct.mu.Unlock()
		if ct.closed {
			_ = c.Close()
			return nil, net.ErrClosed
		}
		ct.conns[tc] = struct{}{}
		return tc, nil
	}
}

// open returns the number of connections open now.
func (ct *connTracker) open() int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return len(ct.conns)
}

// close closes every open connection, idle or not: the sink is closed, so
// nothing of its own is using them.
func (ct *connTracker) close() {
	ct.mu.Lock()
	conns := ct.conns
	ct.conns, ct.closed = nil, true
	ct.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// trackedConn leaves its tracker when closed.
type trackedConn struct {
	net.Conn
	ct   *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.ct.mu.Lock()
		delete(c.ct.conns, c)
		c.ct.mu.Unlock()
	})
	return c.Conn.Close()
}
