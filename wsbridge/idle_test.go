package wsbridge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// idleClientEnv, when set to a WebSocket URL, turns the test binary into the
// client process of TestIdleConnectionsMemory (see TestMain).
const idleClientEnv = "LAKEHOUSE_IDLE_CLIENT"

// TestIdleConnectionsMemory opens LAKEHOUSE_IDLE_N (default 10,000) idle
// legacy connections to the bridge and reports the bridge's memory per
// connection. The clients run in a child process (this test binary re-executed),
// so the figures are the bridge side only. Each client sends a JSON connect
// (which opens an upstream stream), reads its status and then idles; the
// figures are taken once the upstream streams have closed for idleness,
// which is the steady state of an idle legacy child.
//
//	LAKEHOUSE_IDLE_TEST=1 go test -run TestIdleConnectionsMemory -v ./wsbridge
func TestIdleConnectionsMemory(t *testing.T) {
	if os.Getenv("LAKEHOUSE_IDLE_TEST") == "" {
		t.Skip("set LAKEHOUSE_IDLE_TEST=1 to run (opens 10,000 sockets)")
	}
	n := 10000
	if s := os.Getenv("LAKEHOUSE_IDLE_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	raiseNoFile(t, uint64(n)+1024)

	fake := newFakeServer()
	cfg := Config{Upstream: startFake(t, fake), Logger: testLogger(t), UpstreamIdleTimeout: time.Second}
	if s := os.Getenv("LAKEHOUSE_IDLE_BUFSIZE"); s != "" { // compare buffer sizes
		cfg.ReadBufferSize, _ = strconv.Atoi(s)
		cfg.WriteBufferSize = cfg.ReadBufferSize
	}
	keep := os.Getenv("LAKEHOUSE_IDLE_KEEP_UPSTREAM") != "" // compare: streams never idle-closed
	if keep {
		cfg.UpstreamIdleTimeout = -1
	}
	b := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(ln) }()
	defer func() {
		_ = b.Close()
		_ = hs.Close()
		<-served
	}()

	before := sample()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), idleClientEnv+"=ws://"+ln.Addr().String()+"/", "LAKEHOUSE_IDLE_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY") {
		t.Fatalf("client process: %q %v", line, err)
	}
	t.Logf("%d connections up (connect + status each) in %v", n, time.Since(start).Round(time.Millisecond))
	if got := b.Connections(); got != n {
		t.Fatalf("bridge has %d connections, want %d", got, n)
	}
	open := sample()
	if keep {
		t.Logf("upstream streams kept open: %d (the fake server's side of each stream is in this process too)", fake.open())
		report := perConn(open.goTotal, before.goTotal, n)
		t.Logf("streams open: Go runtime total %.1f KiB/conn, VmRSS %.1f KiB/conn, goroutines %.2f/conn",
			report, perConn(open.rss, before.rss, n), float64(open.goroutines-before.goroutines)/float64(n))
		return
	}
	eventually(t, 60*time.Second, "idle upstream streams to close", func() bool { return fake.open() == 0 })
	time.Sleep(500 * time.Millisecond)
	idle := sample()
	if path := os.Getenv("LAKEHOUSE_IDLE_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}

	report := func(label string, s memSample) {
		t.Logf("%-34s heap objects %7.1f KiB/conn, stacks %5.1f KiB/conn, Go runtime total %7.1f KiB/conn, VmRSS %7.1f KiB/conn, goroutines %.2f/conn",
			label,
			perConn(s.heap, before.heap, n), perConn(s.stacks, before.stacks, n),
			perConn(s.goTotal, before.goTotal, n), perConn(s.rss, before.rss, n),
			float64(s.goroutines-before.goroutines)/float64(n))
	}
	report("upstream streams open:", open)
	report("idle (upstream streams closed):", idle)
	if per := perConn(idle.goTotal, before.goTotal, n); per > 30 {
		t.Errorf("idle connection costs %.1f KiB of Go memory, target <= 30 KiB", per)
	}
}

type memSample struct {
	heap, stacks, goTotal, rss uint64
	goroutines                 int
}

func perConn(after, before uint64, n int) float64 {
	return (float64(after) - float64(before)) / float64(n) / 1024
}

// sample collects memory figures after a full GC: live heap objects,
// goroutine stacks, all memory the Go runtime holds from the OS (minus what it
// returned), and the process's resident set.
func sample() memSample {
	runtime.GC()
	debug.FreeOSMemory()
	ms := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(ms)
	s := memSample{
		heap:       ms[0].Value.Uint64(),
		stacks:     ms[1].Value.Uint64(),
		goTotal:    ms[2].Value.Uint64() - ms[3].Value.Uint64() - ms[4].Value.Uint64(),
		goroutines: int(ms[5].Value.Uint64()),
	}
	if raw, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				s.rss = kb * 1024
			}
		}
	}
	return s
}

// idleClientMain is the client process: it opens the connections, sends a
// connect on each, prints READY and idles until stdin closes.
func idleClientMain() int {
	url := os.Getenv(idleClientEnv)
	n, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_IDLE_N"))
	raiseNoFileToMax()

	conns := make([]*websocket.Conn, n)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := idleClientConnect(url, i, &conns[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "idle client:", firstErr)
		return 1
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.CloseNow()
	}
	return 0
}

func idleClientConnect(url string, i int, out **websocket.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return fmt.Errorf("dial %d: %w", i, err)
	}
	if err := wsjson.Write(ctx, c, connectMsg("idle-"+strconv.Itoa(i), "")); err != nil {
		return fmt.Errorf("connect %d: %w", i, err)
	}
	var st codec.StatusMessage
	if err := wsjson.Read(ctx, c, &st); err != nil || st.Type != codec.JSONStatus {
		return fmt.Errorf("status %d: %+v %w", i, st, err)
	}
	// Keep reading in the background so pings and closes are handled.
	_ = c.CloseRead(context.Background())
	*out = c
	return nil
}
