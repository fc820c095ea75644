//go:build unix

package integration

import (
	"net"
	"testing"
	"time"
)

// TestStopWithBlackholedHandshake is TestNetworkFaults' rare shutdown hang,
// made deterministic: a client connects through the proxy and the link is
// blackholed before the client's HTTP/2 preface got through (in
// TestNetworkFaults, a reconnect racing the blackhole round). The server
// accepted the connection, but gRPC has no transport for it yet, so
// keepalives never close it, and gRPC's Stop and GracefulStop wait for its
// handshake: before --grpc-handshake-timeout (gRPC's default is 120 s),
// SIGTERM did not end lakehouse serve within its 60 s shutdown timeout.
func TestStopWithBlackholedHandshake(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	c := newCluster(t, clusterConfig{noBridge: true})
	conn, err := net.Dial("tcp", c.native.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.native.Stats().Open == 0 { // the proxy has connected to the server
		if time.Now().After(deadline) {
			t.Fatal("the proxy never connected to the server")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.native.Blackhole()
	start := time.Now()
	// The handshake timeout (10 s) plus room, well below the shutdown
	// timeout (60 s) that the stop ran into before.
	if err := c.srv.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, readLog(t, c.logPath))
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
