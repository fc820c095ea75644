package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/client"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestSourceRateLimit runs lakehouse serve with a per-source rate limit and
// sends more than a second's worth from Go clients (gRPC) and from legacy
// children (WebSocket, through the embedded bridge) at once: batches beyond
// the rate are nacked rate_limited, the senders slow to the rate, and after a
// graceful stop every entry is stored exactly once, none lost.
func TestSourceRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	const (
		rate      = 2000 // entries/s per source
		batch     = 500
		perSource = 6000 // 3 s of the rate: 1 s of burst, then 2 s of waiting
	)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr, httpAddr := freeAddr(t), freeAddr(t)
	p := startProc(t, addr, filepath.Join(dir, "server.log"), "serve", "--data-dir", dataDir, "--grpc-addr", addr,
		"--http-addr", httpAddr, "--sink", "jsonl", "--log-level", "warn", "--source-rate-entries", fmt.Sprint(rate))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	goStats := make([]client.Stats, 2)
	for i := range goStats {
		wg.Go(func() {
			c, err := client.Dial(ctx, addr, fmt.Sprintf("go-%d", i), client.WithMaxBatchEntries(batch), client.WithBatchTimeout(10*time.Millisecond))
			if err != nil {
				t.Error(err)
				return
			}
			if err := c.SendMany(ctx, workload.Entries(0, perSource)); err != nil {
				t.Error(err)
			}
			if err := c.Close(ctx); err != nil {
				t.Errorf("go-%d close: %v", i, err)
			}
			goStats[i] = c.Stats()
		})
	}
	children := make([]*legacychild.Child, 2)
	for i := range children {
		ch := &legacychild.Child{Source: fmt.Sprintf("legacy-%d", i), Shard: "s"}
		if err := ch.Start(ctx, "ws://"+httpAddr+"/"); err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		children[i] = ch
		wg.Go(func() {
			for range perSource / batch { // all at once, as the original child does
				ch.SendEntries(batch)
			}
		})
	}
	wg.Wait()
	for _, ch := range children {
		st, err := ch.WaitIdle(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.Failed != 0 || len(st.AckedEntries) != perSource || st.Nacked == 0 {
			t.Errorf("%s: %d failed, %d entries acked of %d, %d nacks: want none failed, all acked, some nacked",
				ch.Source, st.Failed, len(st.AckedEntries), perSource, st.Nacked)
		}
	}
	elapsed := time.Since(start)
	for i, st := range goStats {
		if st.EntriesAcked != perSource || st.Nacks["rate_limited"] == 0 {
			t.Errorf("go-%d: %d entries acked of %d, nacks %v: want all acked after rate_limited nacks", i, st.EntriesAcked, perSource, st.Nacks)
		}
	}
	// The rate holds: a source cannot have sent its entries faster than its
	// bucket (one second of burst) allows.
	if min := time.Duration(float64(perSource-rate) / rate * float64(time.Second)); elapsed < min*9/10 {
		t.Errorf("%d entries per source took %v, less than the %v the rate allows", perSource, elapsed, min)
	}
	m := scrapeMetrics(t, httpAddr)
	if n := m[`lakehouse_batches_total{result="nack_rate_limited"}`]; n == 0 {
		t.Error("no rate_limited nacks counted")
	}
	t.Logf("%v for %d entries per source; %v rate_limited nacks", elapsed.Round(time.Millisecond), perSource, m[`lakehouse_batches_total{result="nack_rate_limited"}`])
	if err := p.stop(time.Minute); err != nil { // graceful: flushes
		t.Fatal(err)
	}
	counts := map[string]map[uint64]int{}
	for _, r := range readSink(t, "jsonl", dataDir) {
		if counts[r.source] == nil {
			counts[r.source] = map[uint64]int{}
		}
		counts[r.source][r.entry]++
	}
	for _, src := range []string{"go-0", "go-1", "legacy-0", "legacy-1"} {
		if len(counts[src]) != perSource {
			t.Errorf("%s: %d distinct entries stored, want %d", src, len(counts[src]), perSource)
		}
		for q, c := range counts[src] {
			if c != 1 {
				t.Errorf("%s entry %d stored %d times", src, q, c)
			}
		}
	}
}

// TestConnectionCaps: lakehouse serve refuses gRPC streams beyond
// --max-streams with RESOURCE_EXHAUSTED and WebSocket upgrades beyond
// --max-ws-conns with 503, both naming the limit.
func TestConnectionCaps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	dir := t.TempDir()
	addr, httpAddr := freeAddr(t), freeAddr(t)
	startProc(t, addr, filepath.Join(dir, "server.log"), "serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr,
		"--http-addr", httpAddr, "--sink", "jsonl", "--log-level", "warn", "--max-streams", "2", "--max-ws-conns", "2")
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(source string) error {
		st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
		if err != nil {
			return err
		}
		// A stream the server refuses at once can end before the connect
		// is sent: Send then says io.EOF, and Recv has the status.
		if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = st.Recv()
		return err
	}
	for i := range 2 {
		if err := open(fmt.Sprint("s", i)); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	err = open("s2")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max-streams") {
		t.Fatalf("third stream: %v, want RESOURCE_EXHAUSTED naming max-streams", err)
	}

	for i := range 2 {
		c, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/", nil)
		if err != nil {
			t.Fatalf("WebSocket %d: %v", i, err)
		}
		defer c.CloseNow()
	}
	_, resp, err := websocket.Dial(ctx, "ws://"+httpAddr+"/", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third WebSocket: %v, want 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "max-ws-conns") {
		t.Fatalf("503 body %q does not name the limit", body)
	}
}

// TestHTTPTimeouts: a slowloris client, sending its headers a byte at a
// time, is dropped within --http-read-header-timeout; the per-response write
// timeout neither cuts a 2-second profile (pprof) nor a WebSocket that
// lives longer than it.
func TestHTTPTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server process")
	}
	dir := t.TempDir()
	addr, httpAddr := freeAddr(t), freeAddr(t)
	startProc(t, addr, filepath.Join(dir, "server.log"), "serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr,
		"--http-addr", httpAddr, "--sink", "jsonl", "--log-level", "warn", "--pprof",
		"--http-read-header-timeout", "1s", "--http-write-timeout", "1s")

	// Slowloris: 200 header bytes at one per 50 ms would take 10 s.
	nc, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, nc) // returns when the server closes the connection
		closed <- time.Since(start)
	}()
	req := "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200) + "\r\n\r\n"
	sent := 0
	func() {
		for ; sent < len(req); sent++ {
			select {
			case <-closed:
				closed <- time.Since(start)
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := nc.Write([]byte{req[sent]}); err != nil {
				return
			}
		}
	}()
	select {
	case d := <-closed:
		if sent == len(req) || d > 5*time.Second {
			t.Fatalf("slowloris connection closed after %v with %d of %d header bytes sent, want closed within the 1s timeout", d, sent, len(req))
		}
		t.Logf("slowloris connection dropped after %v, %d of %d header bytes sent", d.Round(time.Millisecond), sent, len(req))
	case <-time.After(15 * time.Second):
		t.Fatal("slowloris connection never dropped")
	}

	// A profile longer than the write timeout completes.
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/profile?seconds=2")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(prof) == 0 {
		t.Fatalf("2 s profile under a 1 s write timeout: status %d, %d bytes, %v", resp.StatusCode, len(prof), err)
	}

	// A legacy child stays connected past the write timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch := &legacychild.Child{Source: "long", Shard: "s"}
	if err := ch.Start(ctx, "ws://"+httpAddr+"/"); err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	time.Sleep(2 * time.Second)
	ch.SendEntries(10)
	if st, err := ch.WaitIdle(10 * time.Second); err != nil || st.Acked != 1 {
		t.Fatalf("batch on a WebSocket older than the write timeout: %+v %v", st, err)
	}

	// And plain requests still work.
	resp, err = http.Get("http://" + httpAddr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health: %d %q", resp.StatusCode, line)
	}
}
