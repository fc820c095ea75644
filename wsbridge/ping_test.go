package wsbridge

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
)

// TestPingClosesHalfOpenChild puts a stalling TCP proxy between a child and
// the bridge: while the link forwards, the child's WebSocket library answers
// the bridge's pings and the connection stays; once the link stalls (no
// FIN, as when the child's host vanishes), the bridge closes the connection
// within about PingInterval+PingTimeout instead of keeping it forever.
func TestPingClosesHalfOpenChild(t *testing.T) {
	env := newEnv(t, startFake(t, newFakeServer()), func(c *Config) {
		c.PingInterval, c.PingTimeout = 50*time.Millisecond, 200*time.Millisecond
	})
	p, err := faultproxy.Start(strings.TrimPrefix(env.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+p.Addr()+"/cdc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	readDone := make(chan struct{})
	go func() { // a child reads all the time, as the legacy children do
		defer close(readDone)
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // about ten pings
	if n := env.bridge.Connections(); n != 1 || env.bridge.PingTimeouts() != 0 {
		t.Fatalf("a child answering pings: %d connections, %d ping timeouts", n, env.bridge.PingTimeouts())
	}
	p.Stall()
	deadline := time.Now().Add(5 * time.Second)
	for env.bridge.Connections() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the bridge kept a half-open child for 5 s (ping timeouts %d)", env.bridge.PingTimeouts())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if env.bridge.PingTimeouts() != 1 {
		t.Errorf("ping timeouts %d, want 1", env.bridge.PingTimeouts())
	}
	p.Resume() // the close reaches the child now
	select {
	case <-readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the child never saw its connection closed")
	}
}

// TestPingsDoNotDisturbLegacyChild runs the legacy child simulator through a
// bridge pinging every 10 ms: every batch is acked, nothing is resent, and
// the connection is never closed.
func TestPingsDoNotDisturbLegacyChild(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), func(c *Config) {
		c.PingInterval, c.PingTimeout = 10*time.Millisecond, time.Second
	})
	child := startLegacyChild(t, env.wsURL, &legacyChild{Source: "pinged", AckTimeout: 5 * time.Second, Heartbeat: 20 * time.Millisecond})
	const batches, per = 40, 20
	for range batches {
		child.SendEntries(per)
		time.Sleep(10 * time.Millisecond)
	}
	st := waitIdle(t, child, 20*time.Second)
	if st.Acked != batches || st.Resent != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := len(fake.entrySeqs("pinged")); got != batches*per {
		t.Fatalf("stored %d entries, want %d", got, batches*per)
	}
	if env.bridge.Connections() != 1 || env.bridge.PingTimeouts() != 0 {
		t.Fatalf("%d connections, %d ping timeouts", env.bridge.Connections(), env.bridge.PingTimeouts())
	}
}
