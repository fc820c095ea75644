package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataDirIsExclusive starts `lakehouse serve`, then a second one on the
// same data directory: the second must refuse to start, naming the first's
// pid, while `tables` and `scan` still read the directory. Once the first is
// killed (-9: the kernel drops its lock) a new server starts there.
func TestDataDirIsExclusive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)
	first := startProc(t, addr, filepath.Join(dir, "first.log"), "serve", "--data-dir", data,
		"--grpc-addr", addr, "--http-addr", "", "--log-level", "warn")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second := exec.CommandContext(ctx, lakehouseBin(t), "serve", "--data-dir", data,
		"--grpc-addr", freeAddr(t), "--http-addr", "", "--log-level", "warn")
	var out bytes.Buffer
	second.Stdout, second.Stderr = &out, &out
	err := second.Run()
	want := fmt.Sprintf("pid %d", first.cmd.Process.Pid)
	if err == nil || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "LOCK") {
		t.Fatalf("second serve on the same data dir: %v\n%s\nwant a failure naming the LOCK file and %q", err, out.String(), want)
	}
	if !first.alive() {
		t.Fatal("the first server died")
	}

	for _, args := range [][]string{
		{"tables", "--data-dir", data},
		{"scan", "--data-dir", data, "--table", "users"},
	} {
		out, err := exec.CommandContext(ctx, lakehouseBin(t), args...).CombinedOutput()
		// scan of a table not created yet fails, but not on the lock.
		if (err != nil && args[0] == "tables") || strings.Contains(string(out), "LOCK") {
			t.Fatalf("lakehouse %s while the server runs: %v\n%s", args[0], err, out)
		}
	}

	first.kill()
	addr2 := freeAddr(t)
	startProc(t, addr2, filepath.Join(dir, "third.log"), "serve", "--data-dir", data,
		"--grpc-addr", addr2, "--http-addr", "", "--log-level", "warn")
}
