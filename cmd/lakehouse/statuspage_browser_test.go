package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// chromiumPath finds a Chromium binary: $LAKEHOUSE_CHROMIUM, or Debian's
// chromium (or another usual name) on PATH.
func chromiumPath() string {
	if p := os.Getenv("LAKEHOUSE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startServe runs `lakehouse serve` in this process on a temporary data
// directory and loopback ports, and stops it when the test ends.
func startServe(t *testing.T, extra ...string) (grpcAddr, httpAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ grpc, http string }
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	args := append([]string{"--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	logw := &testWriter{t: t}
	go func() {
		done <- serve(ctx, args, logw, logw, func(g, h string) { ready <- addrs{g, h} })
	}()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			logw.stop()
		})
		return a.grpc, a.http
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not start in 30 s")
	}
	return "", ""
}

// testWriter sends the server's log lines to the test log until stopped.
type testWriter struct {
	t       *testing.T
	mu      sync.Mutex
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Logf("serve: %s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// TestStatusPageInBrowser loads the status page in headless Chromium while a
// bench runs against the server, and checks that the charts drew points, the
// sources table lists the bench's sources with nonzero rates, and the page
// logged no errors. It saves a screenshot ($LAKEHOUSE_SCREENSHOT, or a
// temporary file; the path is in the log). Without Chromium it skips, unless
// LAKEHOUSE_REQUIRE_CHROMIUM is set (CI), when it fails.
func TestStatusPageInBrowser(t *testing.T) {
	chrome := chromiumPath()
	if chrome == "" && os.Getenv("LAKEHOUSE_REQUIRE_CHROMIUM") != "" {
		t.Fatal("LAKEHOUSE_REQUIRE_CHROMIUM is set but no Chromium was found (install Debian's chromium package, or set LAKEHOUSE_CHROMIUM)")
	}
	if chrome == "" {
		t.Skip("no Chromium found (install Debian's chromium package, or set LAKEHOUSE_CHROMIUM to a Chrome/Chromium binary): skipping the browser test")
	}
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	grpcAddr, httpAddr := startServe(t, "--flush-interval", "1s", "--maintenance-interval", "2s")

	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	const sources = 3
	benchDone := make(chan error, 1)
	go func() {
		// An open loop at a rate the server commits as it goes, mirrors (on
		// by default) included, even under -race on 2 loaded cores: a closed
		// loop left more rows to commit at shutdown than --shutdown-timeout
		// allows (with -race, a 1-s flush of 108,000 entries and their
		// mirror rows took 28 s).
		_, err := bench.Frames(loadCtx, bench.Config{Addr: grpcAddr, Sources: sources, Duration: 40 * time.Second, SourcePrefix: "browser",
			BatchSize: 100, Rate: 1500})
		benchDone <- err
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // root in CI
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1700),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	// Start the browser, then subscribe to the console before loading the
	// page, so that no message is missed.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	report := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(problems, "\n")
	}

	url := "http://" + httpAddr + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	// Data arrived: a few samples, and every bench source listed with a
	// nonzero rate.
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](fmt.Sprintf(`(function () {
			var rows = Array.from(document.querySelectorAll("#sources tbody tr[data-source^='browser']"));
			return Number(document.body.dataset.samples || 0) >= 4 && rows.length === %d &&
				rows.every(function (r) { return Number(r.dataset.rate) > 0; });
		})()`, sources), chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))); err != nil {
		t.Fatalf("waiting for the bench's sources on the page: %v (console: %s)", err, report())
	}
	// A commit and its latency point have been drawn too.
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`Number(document.getElementById("c-latency").dataset.points) > 0 &&
			document.querySelectorAll("#commits tbody tr:not(.empty)").length > 0`,
		chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("waiting for commits on the page: %v (console: %s)", err, report())
	}
	if title != "lakehouse status" {
		t.Errorf("title %q", title)
	}

	points, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`Object.fromEntries(Array.from(document.querySelectorAll("canvas")).map(function (c) { return [c.id, Number(c.dataset.points)]; }))`))
	if err != nil {
		t.Fatal(err)
	}
	srcRows, err := chromedp.Run(ctx, chromedp.Evaluate[[]map[string]string](`Array.from(document.querySelectorAll("#sources tbody tr[data-source]")).map(function (r) {
			return {id: r.dataset.source, rate: r.dataset.rate, text: r.innerText};
		})`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c-entries", "c-bytes", "c-acks", "c-nacks", "c-buffer", "c-wal", "c-latency", "c-commits"} {
		if points[id] < 1 {
			t.Errorf("chart %s drew %d points", id, points[id])
		}
	}
	for _, id := range []string{"c-entries", "c-bytes", "c-acks", "c-buffer", "c-wal"} {
		if points[id] < 3 {
			t.Errorf("chart %s drew %d points, want a line of at least 3", id, points[id])
		}
	}
	t.Logf("points drawn per chart: %v", points)
	bench := 0
	for _, r := range srcRows {
		if strings.HasPrefix(r["id"], "browser") {
			bench++
		}
	}
	if bench != sources {
		t.Errorf("sources table lists %d bench sources, want %d: %v", bench, sources, srcRows)
	}

	path := os.Getenv("LAKEHOUSE_SCREENSHOT")
	if path == "" {
		path = filepath.Join(os.TempDir(), fmt.Sprintf("lakehouse-status-page-%d.png", time.Now().UnixNano()))
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Errorf("saving the screenshot: %v", err)
	} else {
		t.Logf("screenshot of the status page under load: %s", path)
	}

	if r := report(); r != "" {
		t.Errorf("the page logged errors:\n%s", r)
	}
	stopLoad()
	if err := <-benchDone; err != nil && loadCtx.Err() == nil {
		t.Errorf("bench: %v", err)
	}
}
