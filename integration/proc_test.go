package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// builtBinary is a program of this module, built once per test run.
type builtBinary struct {
	pkg  string // the package, relative to integration/
	name string

	once sync.Once
	path string
	err  error
}

// remove deletes the built program's directory, if it was built.
func (b *builtBinary) remove() {
	if b.path != "" {
		_ = os.RemoveAll(filepath.Dir(b.path))
	}
}

// get builds the program the first time and returns its path.
func (b *builtBinary) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "lakehouse-"+b.name+"-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, b.name)
		out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var lakehouseBuild = &builtBinary{pkg: "../cmd/lakehouse", name: "lakehouse"}

// lakehouseBin builds cmd/lakehouse once per test run.
func lakehouseBin(t *testing.T) string { return lakehouseBuild.get(t) }

// freeAddr returns a loopback address with a free port.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a lakehouse process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	args []string
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

// startProc runs `lakehouse <args...>` and waits until its gRPC health check
// at grpcAddr answers SERVING.
func startProc(t *testing.T, grpcAddr string, logPath string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, grpcAddr, logPath, args...)
}

// startProcEnv is startProc with extra environment variables (KEY=VALUE).
func startProcEnv(t *testing.T, env []string, grpcAddr string, logPath string, args ...string) *proc {
	t.Helper()
	return startProcDial(t, nil, env, grpcAddr, logPath, args...)
}

// startProcDial is startProcEnv whose health check dials with dopts (TLS).
func startProcDial(t *testing.T, dopts []grpc.DialOption, env []string, grpcAddr string, logPath string, args ...string) *proc {
	t.Helper()
	p := launchProc(t, env, logPath, args...)
	if grpcAddr != "" {
		p.waitHealthy(grpcAddr, logPath, dopts...)
	}
	return p
}

// launchProc runs `lakehouse <args...>` without waiting for it: start
// several, then waitHealthy each, and their start-ups overlap.
func launchProc(t *testing.T, env []string, logPath string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lakehouseBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, args: args, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) waitHealthy(addr, logPath string, dopts ...grpc.DialOption) {
	p.t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dopts...)...)
	if err != nil {
		p.t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			logs, _ := os.ReadFile(logPath)
			p.t.Fatalf("lakehouse exited early: %v\n%s", p.err, logs)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs, _ := os.ReadFile(logPath)
	p.t.Fatalf("lakehouse at %s never became healthy\n%s", addr, logs)
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(timeout time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		// SIGQUIT makes the Go runtime write every goroutine's stack to
		// the log before it exits: the hang's evidence.
		p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		p.kill()
		return fmt.Errorf("no exit %v after SIGTERM (goroutine dump in the log)", timeout)
	}
}

// readLogFull returns the whole server log.
func readLogFull(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(b)
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	s := string(b)
	if len(s) > 8000 {
		s = "...\n" + s[len(s)-8000:]
	}
	return strings.TrimSpace(s)
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// scrapeMetrics reads the server's Prometheus text exposition into a map from
// series (name with labels, as printed) to value.
func scrapeMetrics(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if i := strings.LastIndexByte(line, ' '); i > 0 && line[0] != '#' {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				m[line[:i]] = v
			}
		}
	}
	return m
}

// busyGoroutines returns the goroutines of the server at httpAddr (started
// with --pprof) whose stacks mention one of words: what a test that waited
// in vain for background work logs, to show where that work was stuck.
func busyGoroutines(t *testing.T, httpAddr string, words ...string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return "goroutine dump: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, g := range strings.Split(string(body), "\n\n") {
		for _, w := range words {
			if strings.Contains(g, w) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}
