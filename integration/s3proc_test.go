//go:build unix

package integration

import (
	"bufio"
	"context"
	"fmt"
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
)

// An S3-compatible object store as its own process, for tests that pause,
// resume or kill the store under a running `lakehouse serve`.
//
//	s3 := startS3(t)                  // SeaweedFS if available, else gofakes3
//	s3.CreateBucket(t, "lake")
//	args := []string{"--warehouse", "s3://lake/wh", "--catalog-props", s3.CatalogProps()}
//	s3.Pause(t)  // SIGSTOP: connections are accepted by the kernel, never answered
//	s3.Resume(t) // SIGCONT
//	s3.Kill()    // SIGKILL (also done by t.Cleanup)
//	uri := s3.RESTCatalog(t, "cat") // SeaweedFS only (skips otherwise): --catalog rest --catalog-uri uri --warehouse s3://cat
//
// Which server runs:
//   - SeaweedFS (`weed server -s3`), the preferred one, when a weed binary is
//     found: $LAKEHOUSE_TEST_WEED, or the cache path weedCachePath (what
//     .ci/run exports when it exists). SeaweedFS keeps its data on disk.
//   - Otherwise internal/testing/s3server (gofakes3, in memory), built with
//     `go build` and run as its own process, so pausing works the same way.
//     Its objects are lost when it is killed.
//
// LAKEHOUSE_TEST_S3=gofakes3 forces the fallback. The test log says which
// server was used.

// weedVersion is the SeaweedFS module version whose binary the cache holds.
const weedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// s3Proc is a running S3-compatible server.
type s3Proc struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint string
	// Kind is "seaweedfs" or "gofakes3".
	Kind string
	// Log is the path of the server's output.
	Log string
	// Iceberg is SeaweedFS's Iceberg REST catalog, http://127.0.0.1:PORT
	// ("" for gofakes3, which has none). See RESTCatalog.
	Iceberg string

	bin           string // the weed binary, for `weed shell`
	master, filer string // weed shell's -master and -filer: HOST:PORT.GRPCPORT

	t       *testing.T
	cmd     *exec.Cmd
	done    chan struct{}
	sockets []string // unix sockets weed leaves behind in /tmp
}

// startS3 starts an S3-compatible server on loopback and waits until it
// serves requests. It is killed when the test ends.
func startS3(t *testing.T) *s3Proc {
	t.Helper()
	if weed := weedBinary(); weed != "" && os.Getenv("LAKEHOUSE_TEST_S3") != "gofakes3" {
		p := startWeed(t, weed)
		t.Logf("object store: SeaweedFS (%s) at %s", weed, p.Endpoint)
		return p
	}
	p := startFakeS3(t)
	t.Logf("object store: gofakes3 (internal/testing/s3server, no SeaweedFS binary: set LAKEHOUSE_TEST_WEED) at %s", p.Endpoint)
	return p
}

// weedCachePath is where .ci/run and developers keep a prebuilt weed binary.
func weedCachePath() string {
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return ""
	}
	return filepath.Join(strings.TrimSpace(string(out)), "lakehouse-test-tools", "weed-"+weedVersion)
}

// weedBinary returns the SeaweedFS binary to use, or "".
func weedBinary() string {
	if p := os.Getenv("LAKEHOUSE_TEST_WEED"); p != "" {
		return p
	}
	if p := weedCachePath(); p != "" {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// freePort returns a free loopback TCP port.
func freePort(t *testing.T) int {
	t.Helper()
	a := freeAddr(t)
	p, err := strconv.Atoi(a[strings.LastIndexByte(a, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startWeed(t *testing.T, bin string) *s3Proc {
	t.Helper()
	dir := t.TempDir()
	ports := map[string]int{}
	for _, name := range []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
		"filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg"} {
		ports[name] = freePort(t)
	}
	args := []string{"server", "-dir=" + filepath.Join(dir, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3", "-volume.max=100", "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
		"-s3.port.lance=0"}
	var sockets []string
	for name, port := range ports {
		args = append(args, fmt.Sprintf("-%s=%d", name, port))
		if svc, ok := strings.CutSuffix(name, ".port.grpc"); ok {
			sockets = append(sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", svc, port))
		}
	}
	sockets = append(sockets, fmt.Sprintf("/tmp/seaweedfs-filer-%d.sock", ports["filer.port"]),
		fmt.Sprintf("/tmp/seaweedfs-s3-%d.sock", ports["s3.port"]))
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &s3Proc{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports["s3.port"]), Kind: "seaweedfs",
		Log: filepath.Join(dir, "weed.log"), sockets: sockets,
		Iceberg: fmt.Sprintf("http://127.0.0.1:%d", ports["s3.port.iceberg"]), bin: bin,
		master: fmt.Sprintf("127.0.0.1:%d.%d", ports["master.port"], ports["master.port.grpc"]),
		filer:  fmt.Sprintf("127.0.0.1:%d.%d", ports["filer.port"], ports["filer.port.grpc"])}
	p.start(t, bin, args, nil)
	// The gateway answers before the filer and a volume are ready: wait
	// until an object can be written and read back.
	p.waitReady(t, 90*time.Second)
	return p
}

var s3serverBuild = &builtBinary{pkg: "../internal/testing/s3server", name: "s3server"}

// s3serverBin builds internal/testing/s3server once per test run.
func s3serverBin(t *testing.T) string { return s3serverBuild.get(t) }

func startFakeS3(t *testing.T) *s3Proc {
	t.Helper()
	p := &s3Proc{Kind: "gofakes3", Log: filepath.Join(t.TempDir(), "s3server.log")}
	addr := make(chan string, 1)
	p.start(t, s3serverBin(t), []string{"-addr", "127.0.0.1:0"}, addr)
	select {
	case a := <-addr:
		p.Endpoint = "http://" + a
	case <-p.done:
		t.Fatalf("s3server exited early:\n%s", readLog(t, p.Log))
	case <-time.After(30 * time.Second):
		t.Fatalf("s3server did not start:\n%s", readLog(t, p.Log))
	}
	p.waitReady(t, 30*time.Second)
	return p
}

// start runs bin in its own process group. With addr set, the first stdout
// line "listening on HOST:PORT" is sent on it.
func (p *s3Proc) start(t *testing.T, bin string, args []string, addr chan<- string) {
	t.Helper()
	logf, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout *bufio.Reader
	if addr != nil {
		r, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout = bufio.NewReader(r)
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.t, p.cmd, p.done = t, cmd, make(chan struct{})
	var wg sync.WaitGroup
	if stdout != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, _ := stdout.ReadString('\n')
			if a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on "); ok {
				addr <- a
			}
			_, _ = stdout.WriteTo(logf)
		}()
	}
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		for _, s := range p.sockets {
			_ = os.Remove(s)
		}
	})
}

// waitReady waits until an object can be written and read back in a
// scratch bucket.
func (p *s3Proc) waitReady(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited early:\n%s", p.Kind, readLog(t, p.Log))
		default:
		}
		if last = p.probe(); last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s at %s not ready after %v: %v\n%s", p.Kind, p.Endpoint, limit, last, readLog(t, p.Log))
}

func (p *s3Proc) probe() error {
	if err := p.request(http.MethodPut, "/lakehouse-probe", nil); err != nil {
		return err
	}
	if err := p.request(http.MethodPut, "/lakehouse-probe/ready", strings.NewReader("ok")); err != nil {
		return err
	}
	return p.request(http.MethodGet, "/lakehouse-probe/ready", nil)
}

// request sends an anonymous request and wants a 2xx answer (or, for a
// bucket PUT, "already exists").
func (p *s3Proc) request(method, path string, body *strings.Reader) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var req *http.Request
	var err error
	if body != nil {
		req, err = http.NewRequestWithContext(ctx, method, p.Endpoint+path, body)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, p.Endpoint+path, nil)
	}
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	msg := string(buf[:n])
	if resp.StatusCode/100 == 2 || (resp.StatusCode == http.StatusConflict && strings.Contains(msg, "BucketAlready")) {
		return nil
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
}

// CreateBucket creates a bucket (an anonymous PUT /<bucket>).
func (p *s3Proc) CreateBucket(t *testing.T, bucket string) {
	t.Helper()
	if err := p.request(http.MethodPut, "/"+bucket, nil); err != nil {
		t.Fatalf("create bucket %q: %v", bucket, err)
	}
}

// RESTCatalog creates the table bucket name in SeaweedFS's Iceberg REST
// catalog and returns the catalog's URI; its warehouse is s3://<name>. The
// test is skipped on gofakes3, which has no REST catalog.
func (p *s3Proc) RESTCatalog(t *testing.T, name string) string {
	t.Helper()
	if p.Kind != "seaweedfs" {
		t.Skipf("the Iceberg REST catalog needs SeaweedFS (set LAKEHOUSE_TEST_WEED or cache the binary at %s); the object store is %s", weedCachePath(), p.Kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, "shell", "-master="+p.master, "-filer="+p.filer)
	cmd.Stdin = strings.NewReader("s3tables.bucket -create -name " + name + " -account 000000000000\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "bucket/"+name) {
		t.Fatalf("weed shell s3tables.bucket -create -name %s: %v\n%s", name, err, out)
	}
	// The catalog's port may open after the S3 gateway's.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.Iceberg + "/v1/config?warehouse=s3://" + name)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p.Iceberg
			}
			err = fmt.Errorf("GET /v1/config: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Iceberg REST catalog at %s: %v\n%s", p.Iceberg, err, readLog(t, p.Log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Props are the iceberg sink's storage properties for this server.
func (p *s3Proc) Props() map[string]string {
	return map[string]string{
		"s3.endpoint":                 p.Endpoint,
		"s3.region":                   "us-east-1",
		"s3.access-key-id":            "test-key",
		"s3.secret-access-key":        "test-secret",
		"s3.force-virtual-addressing": "false",
	}
}

// CatalogProps is Props as the value of serve's --catalog-props.
func (p *s3Proc) CatalogProps() string { return catalogProps(p.Props()) }

// Env is what a lakehouse process needs besides the properties: no EC2
// metadata lookups for credentials or region.
func (p *s3Proc) Env() []string { return []string{"AWS_EC2_METADATA_DISABLED=true"} }

func (p *s3Proc) signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Pause stops the server (SIGSTOP to its process group): requests hang
// until Resume.
func (p *s3Proc) Pause(t *testing.T) {
	t.Helper()
	if err := p.signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("pause %s: %v", p.Kind, err)
	}
	p.waitStopped(t)
}

// waitStopped waits until every thread of the server is stopped. kill(2)
// returns before they are: the thread that takes SIGSTOP stops the others
// when it next runs, and until then another thread may still answer a
// request. Where there is no /proc, it returns at once.
func (p *s3Proc) waitStopped(t *testing.T) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		running := 0
		for _, task := range tasks {
			stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
			// The state follows the command name in parentheses: "T" is
			// stopped, "Z" and "X" are exiting threads.
			if i := strings.LastIndexByte(string(stat), ')'); err == nil && i > 0 && i+2 < len(stat) &&
				!strings.ContainsRune("TZX", rune(stat[i+2])) {
				running++
			}
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause %s: %d threads still running 10s after SIGSTOP", p.Kind, running)
		}
	}
}

// Resume continues a paused server (SIGCONT).
func (p *s3Proc) Resume(t *testing.T) {
	t.Helper()
	if err := p.signal(syscall.SIGCONT); err != nil {
		t.Fatalf("resume %s: %v", p.Kind, err)
	}
}

// Kill ends the server (SIGKILL, paused or not) and waits for it.
func (p *s3Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.signal(syscall.SIGKILL)
	<-p.done
}

// TestS3ProcPauses checks the helper itself: a paused store does not answer,
// a resumed one does, and nothing was lost meanwhile.
func TestS3ProcPauses(t *testing.T) {
	s3 := startS3(t)
	s3.CreateBucket(t, "lake")
	if err := s3.request(http.MethodPut, "/lake/a", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	s3.Pause(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s3.Endpoint+"/lake/a", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a paused %s answered: %s", s3.Kind, resp.Status)
	}
	s3.Resume(t)
	if err := s3.request(http.MethodGet, "/lake/a", nil); err != nil {
		t.Fatalf("after resume: %v", err)
	}
}
