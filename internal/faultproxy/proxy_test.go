package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink is a target that records what each connection sent and echoes it.
type sink struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	got  [][]byte // per connection, in accept order
	ends chan int // connection index, when its read side ended
}

func newSink(t *testing.T) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, ends: make(chan int, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			i := len(s.got)
			s.got = append(s.got, nil)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.got[i] = append(s.got[i], buf[:n]...)
						s.mu.Unlock()
						if _, werr := c.Write(buf[:n]); werr != nil {
							err = werr
						}
					}
					if err != nil {
						s.ends <- i
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *sink) received(i int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.got) {
		return nil
	}
	return bytes.Clone(s.got[i])
}

func start(t *testing.T, s *sink) *Proxy {
	t.Helper()
	p, err := Start(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads its echo within d.
func roundTrip(c net.Conn, msg []byte, d time.Duration) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func TestForwardsAndCounts(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	msg := bytes.Repeat([]byte("abc"), 50000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the proxy: %v", err)
	}
	st := p.Stats()
	if st.Accepted != 1 || st.Open != 1 || st.BytesUp != int64(len(msg)) || st.BytesDown != int64(len(msg)) {
		t.Errorf("stats %+v", st)
	}
}

func TestDropClosesCurrentConnectionsOnly(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	if err := roundTrip(c, []byte("hello"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Drop()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after Drop: %v, want EOF", err)
	}
	select {
	case <-s.ends:
	case <-time.After(5 * time.Second):
		t.Fatal("the server side was not closed")
	}
	c2 := dial(t, p)
	if err := roundTrip(c2, []byte("again"), 5*time.Second); err != nil {
		t.Fatalf("new connection after Drop: %v", err)
	}
	if st := p.Stats(); st.Accepted != 2 || st.Dropped != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestStallHoldsWithoutClosing(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	if err := roundTrip(c, []byte("before"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	c2 := dial(t, p) // a connection made during the stall is stalled too
	for _, conn := range []net.Conn{c, c2} {
		err := roundTrip(conn, []byte("held"), 300*time.Millisecond)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round trip during a stall: %v, want a timeout", err)
		}
	}
	if got := string(s.received(0)); got != "before" {
		t.Errorf("server received %q during the stall, want only %q", got, "before")
	}
	p.Resume()
	for _, conn := range []net.Conn{c, c2} {
		got := make([]byte, 4)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "held" {
			t.Fatalf("after Resume: %q %v", got, err)
		}
	}
	if st := p.Stats(); st.Dropped != 0 || st.Open != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestCutAfterCutsMidStream(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	if err := roundTrip(c, []byte("0123"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.CutAfter(10)
	_, _ = c.Write(bytes.Repeat([]byte("x"), 100))
	select {
	case <-s.ends:
	case <-time.After(5 * time.Second):
		t.Fatal("the server side was not closed by the cut")
	}
	if got := string(s.received(0)); got != "0123xxxxxxxxxx" {
		t.Errorf("server received %q, want the 4 bytes before and 10 after", got)
	}
	c2 := dial(t, p) // new connections are not cut
	if err := roundTrip(c2, bytes.Repeat([]byte("y"), 100), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSlowLink(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Errorf("round trip took %v with 100 ms latency each way", rtt)
	}
	p.SetLatency(0)
	p.SetBandwidth(4000)
	start = time.Now()
	if err := roundTrip(c, bytes.Repeat([]byte("z"), 2000), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 2,000 bytes each way at 4,000 B/s: at least ~1 s (lower bound only).
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Errorf("2,000-byte echo took %v at 4,000 B/s", d)
	}
	p.SetBandwidth(0)
	if err := roundTrip(c, []byte("fast"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCloseEndsStalledConnections(t *testing.T) {
	s := newSink(t)
	p, err := Start(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	p.Stall()
	_, _ = c.Write([]byte("stuck"))
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a stalled connection")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

func TestStartRejectsBadTarget(t *testing.T) {
	if _, err := Start("no-port"); err == nil {
		t.Fatal("Start accepted a target without a port")
	}
}

func TestStallHoldsTheClose(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	// The target ends the connection during the stall (it sees our
	// half-close and closes): that must not reach the client before Resume.
	for _, l := range p.links() {
		_ = l.server.(*net.TCPConn).CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during a stall after the far end closed: %v, want a timeout", err)
	}
	p.Resume()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after Resume: %v, want EOF", err)
	}
}

func TestBlackholeHoldsCurrentConnectionsOnly(t *testing.T) {
	s := newSink(t)
	p := start(t, s)
	c := dial(t, p)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	if err := roundTrip(c, []byte("y"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("round trip on a blackholed connection: %v, want a timeout", err)
	}
	c2 := dial(t, p)
	if err := roundTrip(c2, []byte("new"), 5*time.Second); err != nil {
		t.Fatalf("new connection after Blackhole: %v", err)
	}
	if st := p.Stats(); st.Open != 2 {
		t.Errorf("stats %+v: the blackholed connection must stay open", st)
	}
}
