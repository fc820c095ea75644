package examples

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestNodeExample runs examples/node/stream.js (@grpc/grpc-js) against a
// real server: it must connect, get its batch acked, see it persisted and
// get the flush's status, and the rows must be stored as sent. It installs
// the example's locked dependencies with npm ci in a temporary directory and
// is skipped where node or npm is not installed.
func TestNodeExample(t *testing.T) {
	if testing.Short() {
		t.Skip("installs npm packages and runs node")
	}
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("node and npm are not installed (apt-get install nodejs npm)")
	}
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "stream.js"} {
		b, err := os.ReadFile(filepath.Join("node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	proto, err := filepath.Abs(filepath.Join("..", "proto", "lakehouse", "v1", "cdc.proto"))
	if err != nil {
		t.Fatal(err)
	}

	in := servertest.Start(t)
	run := exec.CommandContext(ctx, node, "stream.js", in.Addr)
	run.Dir = dir
	run.Env = append(os.Environ(), "LAKEHOUSE_PROTO="+proto, "LAKEHOUSE_SOURCE=node-test")
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("node stream.js: %v\n%s", err, out)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m struct{ Kind string }
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("output line %q: %v\n%s", line, err, out)
		}
		kinds = append(kinds, m.Kind)
	}
	if got := strings.Join(kinds, ","); got != "connected,ack,persisted,status" {
		t.Fatalf("responses %s, want connected,ack,persisted,status\n%s", got, out)
	}
	recs := in.Records()
	if len(recs) != 2 || recs[0].Op != "INSERT" || recs[1].Op != "UPDATE" || recs[1].Before == nil ||
		*recs[1].After != `{"id":"u1","name":"Anna"}` || recs[0].SourceID != "node-test" || recs[0].ShardName != "js" {
		t.Fatalf("stored rows %+v", recs)
	}
}
