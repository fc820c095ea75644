//go:build unix

package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/faultproxy"
)

// The fault harness: lakehouse serve and a standalone lakehouse bridge as
// processes, Go clients reaching the server through one fault proxy and the
// bridge reaching it through another, so that every network fault hits
// both kinds of children.
//
//	Go clients ----------------------> native proxy ---> lakehouse serve
//	legacy children -> lakehouse bridge -> upstream proxy --^
//
// Keepalives are short here (the CI variant must be quick): the server pings
// a silent connection after 1 s and gives it 2 s; clients and the bridge
// ping after gRPC's minimum of 10 s and give it 2 s; the bridge pings its
// children every 2 s.

// Keepalive settings of the harness.
const (
	harnessServerKeepalive  = "1s"
	harnessServerKATimeout  = "2s"
	harnessClientKeepalive  = 10 * time.Second
	harnessClientKATimeout  = 2 * time.Second
	harnessBridgeKeepalive  = "10s"
	harnessBridgeKATimeout  = "2s"
	harnessBridgePing       = "2s"
	harnessBridgePingTimout = "5s"
)

// clusterConfig configures a cluster.
type clusterConfig struct {
	// dataDir is the server's data directory (default: a temporary one).
	dataDir string
	// serveArgs are added to serve's arguments (later flags win).
	serveArgs []string
	// env is added to the server's environment (KEY=VALUE).
	env []string
	// noBridge runs no bridge (native children only).
	noBridge bool
	// storeProps are the storage properties to read the tables back with
	// (an s3:// warehouse); nil for local files.
	storeProps map[string]string
}

type cluster struct {
	t        *testing.T
	dir      string
	dataDir  string
	grpcAddr string
	httpAddr string
	args     []string
	env      []string
	props    map[string]string // storage properties for reading back
	logPath  string
	srv      *proc
	peakKB   atomic.Int64 // the largest VmHWM of any server process, kB

	native    *faultproxy.Proxy // Go clients -> server
	upstream  *faultproxy.Proxy // bridge -> server
	bridge    *proc
	bridgeURL string // ws://host:port/cdc
	bridgeLog string
}

func newCluster(t *testing.T, cfg clusterConfig) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), env: cfg.env, props: cfg.storeProps}
	c.dataDir = cfg.dataDir
	if c.dataDir == "" {
		c.dataDir = filepath.Join(c.dir, "data")
	}
	c.grpcAddr, c.httpAddr = freeAddr(t), freeAddr(t)
	c.logPath = filepath.Join(c.dir, "server.log")
	c.args = append([]string{"serve", "--data-dir", c.dataDir, "--grpc-addr", c.grpcAddr, "--http-addr", c.httpAddr,
		"--flush-interval", "300ms", "--flush-entries", "3000", "--no-maintenance", "--log-level", "info",
		"--grpc-keepalive-time", harnessServerKeepalive, "--grpc-keepalive-timeout", harnessServerKATimeout,
		"--commit-timeout", "20s"}, cfg.serveArgs...)
	c.srv = startProcEnv(t, c.env, c.grpcAddr, c.logPath, c.args...)
	var err error
	if c.native, err = faultproxy.Start(c.grpcAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.native.Close() })
	if cfg.noBridge {
		return c
	}
	if c.upstream, err = faultproxy.Start(c.grpcAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.upstream.Close() })
	bridgeAddr := freeAddr(t)
	c.bridgeLog = filepath.Join(c.dir, "bridge.log")
	c.bridge = startProc(t, "", c.bridgeLog, "bridge", "--upstream", c.upstream.Addr(), "--http-addr", bridgeAddr,
		"--upstream-keepalive-time", harnessBridgeKeepalive, "--upstream-keepalive-timeout", harnessBridgeKATimeout,
		"--ping-interval", harnessBridgePing, "--ping-timeout", harnessBridgePingTimout, "--log-level", "info")
	waitHTTP(t, "http://"+bridgeAddr+"/health", c.bridgeLog)
	c.bridgeURL = "ws://" + bridgeAddr + "/cdc"
	return c
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url, logPath string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered\n%s", url, readLog(t, logPath))
}

// proxies returns the proxies every network fault applies to.
func (c *cluster) proxies() []*faultproxy.Proxy {
	if c.upstream == nil {
		return []*faultproxy.Proxy{c.native}
	}
	return []*faultproxy.Proxy{c.native, c.upstream}
}

// notePeak records the server's peak resident set so far.
func (c *cluster) notePeak() {
	if kb := vmHWM(c.srv.cmd.Process.Pid); kb > c.peakKB.Load() {
		c.peakKB.Store(kb)
	}
}

// vmHWM returns a process's peak resident set size in kB (0 if unknown).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// kill9 kills the server with SIGKILL and starts it again on the same data
// directory and addresses.
func (c *cluster) kill9() {
	c.t.Helper()
	c.notePeak()
	c.srv.kill()
	c.srv = startProcEnv(c.t, c.env, c.grpcAddr, c.logPath, c.args...)
}

// pause stops the server with SIGSTOP for d, then continues it.
func (c *cluster) pause(d time.Duration) {
	c.t.Helper()
	if err := c.srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("SIGSTOP: %v", err)
	}
	time.Sleep(d)
	if err := c.srv.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("SIGCONT: %v", err)
	}
}

// pauseThenKill stops the server with SIGSTOP for d, then kills it (kill
// -9 of a stopped process) and starts it again.
func (c *cluster) pauseThenKill(d time.Duration) {
	c.t.Helper()
	if err := c.srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("SIGSTOP: %v", err)
	}
	time.Sleep(d)
	c.kill9()
}

// api returns a CDCService client of the server (direct, not proxied).
func (c *cluster) api() (lakehousev1.CDCServiceClient, func()) {
	c.t.Helper()
	cc, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	return lakehousev1.NewCDCServiceClient(cc), func() { cc.Close() }
}

// drain flushes until a flush succeeds and checks that nothing is left in
// the server: buffer and staging empty, the write-ahead log healthy, no
// recovery running, every source persisted up to its last batch.
func (c *cluster) drain(timeout time.Duration) error {
	c.t.Helper()
	api, done := c.api()
	defer done()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := api.Flush(ctx, &lakehousev1.FlushRequest{})
		if err == nil && r.GetResult().GetSuccess() {
			var st *lakehousev1.GetStatusResponse
			st, err = api.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
			cancel()
			if err == nil {
				if last = undrained(st.GetStatus()); last == "" {
					return nil
				}
			}
		} else {
			cancel()
			last = fmt.Sprintf("flush: %v %v", err, r.GetResult())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not drained after %v: %s", timeout, last)
}

// undrained says what is still held in the server ("" when nothing is).
func undrained(st *lakehousev1.ServerStatus) string {
	var out []string
	if n := st.GetBuffer().GetEntryCount(); n != 0 {
		out = append(out, fmt.Sprintf("%d entries buffered", n))
	}
	if n := st.GetStaged().GetEntryCount(); n != 0 {
		out = append(out, fmt.Sprintf("%d entries staged", n))
	}
	if s := st.GetWal().GetState(); s != lakehousev1.WALState_WAL_STATE_OK {
		out = append(out, "wal "+s.String())
	}
	if st.GetRecovery().GetActive() {
		out = append(out, "storage recovery active")
	}
	for _, s := range st.GetSources() {
		if s.GetPersistedSequence() != s.GetLastSequence() {
			out = append(out, fmt.Sprintf("%s persisted %d of %d", s.GetSourceId(), s.GetPersistedSequence(), s.GetLastSequence()))
		}
	}
	return strings.Join(out, "; ")
}

// stop ends the server gracefully (SIGTERM) and the bridge.
func (c *cluster) stop() {
	c.t.Helper()
	c.notePeak()
	if c.bridge != nil {
		_ = c.bridge.stop(10 * time.Second)
	}
	if err := c.srv.stop(60 * time.Second); err != nil {
		log := readLogFull(c.t, c.logPath)
		if len(log) > 200_000 { // the goroutine dump is at the end
			log = "...\n" + log[len(log)-200_000:]
		}
		c.t.Errorf("graceful stop: %v\n%s", err, log)
	}
}
