package wsbridge

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// TestProcessBridgeKill9 runs `lakehouse serve` and `lakehouse bridge` as
// separate processes (LAKEHOUSE_BIN names the binary; built when unset),
// drives the standalone bridge with a legacy-child simulator, kills the
// server with SIGKILL mid-stream and restarts it on the same data directory.
// The child's in-flight batches are nacked (internal_error, retry) by the
// bridge, resent under new numbers once the server is back, and every entry
// ends up in the sink exactly once.
//
//	go build -o /tmp/lakehouse ./cmd/lakehouse
//	LAKEHOUSE_BIN=/tmp/lakehouse go test -run TestProcessBridgeKill9 -v ./wsbridge
func TestProcessBridgeKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the lakehouse binary")
	}
	bin := os.Getenv("LAKEHOUSE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "lakehouse")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lakehouse").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)

	startServe := func() *exec.Cmd {
		return startProc(t, bin, "serve", "--data-dir", dataDir, "--sink", "jsonl", "--grpc-addr", grpcAddr,
			"--http-addr", "", "--flush-interval", "1h", "--flush-age", "1h", "--log-level", "warn")
	}
	serve := startServe()
	waitTCP(t, grpcAddr)
	bridge := startProc(t, bin, "bridge", "--upstream", grpcAddr, "--http-addr", httpAddr, "--log-level", "warn")
	waitHTTP(t, "http://"+httpAddr+"/health")

	child := startLegacyChild(t, "ws://"+httpAddr+"/", &legacyChild{
		Source: "proc-child", Shard: "proc-shard", AckTimeout: 2 * time.Second, MaxRetries: 30, Heartbeat: 500 * time.Millisecond,
	})
	const batches, per = 20, 50
	for i := range batches {
		child.SendEntries(per)
		if i == batches/2 {
			if err := serve.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = serve.Wait()
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	serve = startServe()
	waitTCP(t, grpcAddr)
	st := waitIdle(t, child, 60*time.Second)
	if st.Failed != 0 {
		t.Fatalf("child stats %+v", st)
	}
	t.Logf("child: %+v", fmt.Sprintf("sent %d resent %d acked %d duplicates %d nacked %d timed out %d", st.Sent, st.Resent, st.Acked, st.Duplicates, st.Nacked, st.TimedOut))

	resp, err := http.Post("http://"+httpAddr+"/flush", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("flush: %d %s", resp.StatusCode, body.String())
	}
	recs, err := jsonl.ReadAll(filepath.Join(dataDir, "jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	count := map[uint64]int{}
	for _, r := range recs {
		if r.SourceID == "proc-child" {
			count[r.EntrySeq]++
		}
	}
	for s := uint64(1); s <= batches*per; s++ {
		if count[s] != 1 {
			t.Fatalf("entry %d stored %d times (%d rows in all)", s, count[s], len(recs))
		}
	}
	if len(count) != batches*per {
		t.Fatalf("%d distinct entries, want %d", len(count), batches*per)
	}

	// SIGTERM ends both processes cleanly.
	child.Close()
	for _, p := range []*exec.Cmd{bridge, serve} {
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v: %v", p.Args[:2], err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%v did not stop on SIGTERM", p.Args[:2])
		}
	}
}

func startProc(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 30*time.Second, "listener "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	eventually(t, 30*time.Second, url, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}
