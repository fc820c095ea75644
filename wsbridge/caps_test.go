package wsbridge

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// dialStatus dials the bridge and returns the HTTP status of the upgrade
// (101 on success, the connection then closed by the test's end) and the
// refusal's body.
func dialStatus(t *testing.T, url string) (int, string, *websocket.Conn) {
	t.Helper()
	c, resp, err := websocket.Dial(ctx5(t), url, nil)
	if err == nil {
		t.Cleanup(func() { _ = c.CloseNow() })
		return http.StatusSwitchingProtocols, "", c
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// TestMaxConnectionsPerAddr: upgrades beyond the per-address cap get 503
// naming the limit; a closed connection frees its slot.
func TestMaxConnectionsPerAddr(t *testing.T) {
	env := newEnv(t, startFake(t, newFakeServer()), func(c *Config) { c.MaxConnectionsPerAddr = 2 })
	_, _, first := dialStatus(t, env.wsURL)
	pingPong(t, first)
	if code, _, _ := dialStatus(t, env.wsURL); code != http.StatusSwitchingProtocols {
		t.Fatalf("second connection: %d", code)
	}
	code, body, _ := dialStatus(t, env.wsURL)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "max-ws-conns-per-addr") || !strings.Contains(body, "127.0.0.1") {
		t.Fatalf("third connection from one address: %d %q, want 503 naming the per-address limit", code, body)
	}
	_ = first.CloseNow()
	eventually(t, 5*time.Second, "slot freed", func() bool {
		code, _, _ := dialStatus(t, env.wsURL)
		return code == http.StatusSwitchingProtocols
	})
}

// TestMaxConnectionsConcurrentUpgrades: upgrades racing for the last slots
// never overshoot the total cap (they are counted from the upgrade on).
func TestMaxConnectionsConcurrentUpgrades(t *testing.T) {
	const limit = 3
	env := newEnv(t, startFake(t, newFakeServer()), func(c *Config) { c.MaxConnections = limit })
	var (
		mu       sync.Mutex
		ok, full int
		wg       sync.WaitGroup
	)
	for range 12 {
		wg.Go(func() {
			code, body, _ := dialStatus(t, env.wsURL)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case code == http.StatusSwitchingProtocols:
				ok++
			case code == http.StatusServiceUnavailable && strings.Contains(body, "max-ws-conns"):
				full++
			default:
				t.Errorf("dial: %d %q", code, body)
			}
		})
	}
	wg.Wait()
	if ok != limit || full != 12-limit {
		t.Fatalf("%d upgrades succeeded and %d were refused, want %d and %d", ok, full, limit, 12-limit)
	}
}

// TestWebSocketOutlivesHTTPTimeouts: the HTTP server's read and write
// timeouts (against slow clients) do not end a WebSocket that lives longer
// (net/http clears a connection's deadlines when it is hijacked; lakehouse
// serve relies on it).
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	b := New(Config{Upstream: startFake(t, newFakeServer()), Logger: testLogger(t)})
	srv := httptest.NewUnstartedServer(b.Handler())
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	srv.Start()
	t.Cleanup(func() {
		_ = b.Close()
		srv.Close()
	})
	c, _, err := websocket.Dial(ctx5(t), "ws"+strings.TrimPrefix(srv.URL, "http")+"/cdc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	pingPong(t, c)
	time.Sleep(500 * time.Millisecond)
	pingPong(t, c)
}
