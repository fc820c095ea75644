// Package faultproxy is a loopback TCP proxy that tests put between a client
// and a server to inject network faults: dropped connections, a stalled link
// (nothing forwarded, nothing closed: a half-open connection as a NAT or a
// dead peer makes one), a slow link, and a connection cut in the middle of a
// frame.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunkSize is the largest read forwarded at once.
const chunkSize = 32 << 10

// Stats are a proxy's counters since Start.
type Stats struct {
	// Accepted is the number of client connections accepted.
	Accepted int64
	// Open is the number of connections open now.
	Open int
	// BytesUp and BytesDown count bytes forwarded client->server and
	// server->client.
	BytesUp, BytesDown int64
	// Dropped counts connections closed by Drop or CutAfter.
	Dropped int64
}

// Proxy forwards connections accepted on a loopback port to a target
// address. Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	accepted, up, down, dropped atomic.Int64

	mu        sync.Mutex
	conns     map[*link]struct{}
	resume    chan struct{} // nil unless stalled; closed by Resume
	latency   time.Duration
	bandwidth int // bytes per second each way per connection; 0: unlimited
	closed    bool
}

// link is one proxied connection: the client's socket and ours to the target.
type link struct {
	client, server net.Conn
	cut            atomic.Int64 // client->server bytes left before the cut; -1: none
	blackholed     atomic.Bool  // forwards nothing, ever (Blackhole)
	once           sync.Once
	done           chan struct{} // closed when the link is closed
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// Start listens on 127.0.0.1:0 and forwards every connection to target.
func Start(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dials the target and pumps both directions until either ends.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close() // the client sees a refused-like close, as without the proxy
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	l.cut.Store(-1)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.conns[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, c, s, true) }()
	go func() { defer wg.Done(); p.pump(l, s, c, false) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

// pump copies src to dst through the fault gates; either side failing
// closes the whole link (no half-closed links: the faults under test are
// about whole connections).
func (p *Proxy) pump(l *link, src, dst net.Conn, up bool) {
	defer l.close()
	buf := make([]byte, chunkSize)
	for {
		n := len(buf)
		if bw := p.currentBandwidth(); bw > 0 {
			n = min(n, max(bw/20, 1)) // ~50 ms of data per write keeps the rate smooth
		}
		n, err := src.Read(buf[:n])
		if n > 0 {
			readAt := time.Now()
			if !p.gate(l, readAt, n) {
				return
			}
			data := buf[:n]
			cutNow := false
			if up {
				if left := l.cut.Load(); left >= 0 {
					if int64(len(data)) >= left {
						data, cutNow = data[:left], true
					}
					l.cut.Store(left - int64(len(data)))
				}
			}
			if len(data) > 0 {
				if _, werr := dst.Write(data); werr != nil {
					return
				}
				if up {
					p.up.Add(int64(len(data)))
				} else {
					p.down.Add(int64(len(data)))
				}
			}
			if cutNow {
				p.dropped.Add(1)
				return
			}
		}
		if err != nil {
			// A stalled link delivers no FIN either: the other side must
			// find out by itself (keepalives), as with a real blackhole.
			p.gate(l, time.Now(), 0)
			return
		}
	}
}

// gate holds n bytes read at readAt while the proxy is stalled, then for the
// latency and the bandwidth; false when the link closed meanwhile.
func (p *Proxy) gate(l *link, readAt time.Time, n int) bool {
	for {
		p.mu.Lock()
		resume, lat, bw := p.resume, p.latency, p.bandwidth
		p.mu.Unlock()
		if l.blackholed.Load() {
			<-l.done
			return false
		}
		if resume != nil {
			select {
			case <-resume:
				continue // settings may have changed meanwhile
			case <-l.done:
				return false
			}
		}
		wait := time.Until(readAt.Add(lat))
		if bw > 0 {
			wait = max(wait, 0) + time.Duration(float64(n)/float64(bw)*float64(time.Second))
		}
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return true
		case <-l.done:
			t.Stop()
			return false
		}
	}
}

func (p *Proxy) currentBandwidth() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bandwidth
}

// Drop closes every current connection; new ones are still accepted.
func (p *Proxy) Drop() {
	for _, l := range p.links() {
		p.dropped.Add(1)
		l.close()
	}
}

// Stall stops forwarding in both directions, for current and new
// connections, without closing anything, until Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Blackhole makes every current connection forward nothing more, in either
// direction, and never close by itself (not even when an end closes): a
// half-open connection, as left by a NAT that forgot it or a peer that
// vanished. New connections are forwarded normally; only keepalives or
// timeouts at the ends free the old ones.
func (p *Proxy) Blackhole() {
	for _, l := range p.links() {
		l.blackholed.Store(true)
	}
}

// Resume ends a Stall: held data is forwarded.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

// SetLatency delays every forwarded read by d in each direction (0: off).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
}

// SetBandwidth limits each connection to bytesPerSec in each direction
// (0: unlimited).
func (p *Proxy) SetBandwidth(bytesPerSec int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bandwidth = max(bytesPerSec, 0)
}

// CutAfter closes each current connection after it has forwarded n more
// bytes client->server: the server sees a frame cut short (n 0 closes
// before the next byte).
func (p *Proxy) CutAfter(n int64) {
	n = max(n, 0)
	for _, l := range p.links() {
		l.cut.Store(n)
	}
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Open: open, BytesUp: p.up.Load(), BytesDown: p.down.Load(), Dropped: p.dropped.Load()}
}

func (p *Proxy) links() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		out = append(out, l)
	}
	return out
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range p.links() {
		l.close()
	}
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}
