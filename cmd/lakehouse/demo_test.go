package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo streams for seconds")
	}
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if err := runDemo(context.Background(), []string{"--duration", "3s", "--data-dir", dir, "--flush-interval", "1s"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	t.Log(s)
	for _, want := range []string{
		"status page:  http://127.0.0.1:",
		"from 3 native sources (Go client) and 2 legacy WebSocket children",
		"entries/s  5 sources connected",
		"native sources: client: 3 sources",
		"legacy child legacy-0:", "legacy child legacy-1:",
		"flushed: success=true",
		"warehouse: file://" + dir + "/warehouse",
		`SqlCatalog("lakehouse", uri="sqlite:///` + dir + `/catalog.db", warehouse="file://` + dir + `/warehouse")`,
		`cat.load_table("cdc.users")`,
		"iceberg_scan('" + dir + "/warehouse/cdc.db/users/metadata/",
		"spark.sql.catalog.lakehouse.uri=jdbc:sqlite:" + dir + "/catalog.db",
		"FROM lakehouse.cdc.users",
		"users as it is now (its mirror table cdc_current.users: one row per key, typed columns), first 3 rows:\nROW_ID",
		"--table users --mirror --limit 0",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every W1 table is listed with rows, and shows rows of both kinds of
	// source; the tables hold exactly the entries the server accepted.
	for _, name := range workload.W1Tables() {
		m := regexp.MustCompile(`(?m)^  ` + name + `\s+(\d+)\s+\d+\s+\d+$`).FindStringSubmatch(s)
		if m == nil || m[1] == "0" {
			t.Errorf("table %s not listed with rows", name)
		}
		if !strings.Contains(s, "\n"+name+", first 3 rows:") {
			t.Errorf("no rows printed for %s", name)
		}
	}
	m := regexp.MustCompile(`total: (\d+) rows; the sources' accepted entries: (\d+)`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no total line")
	}
	if rows, _ := strconv.Atoi(m[1]); rows == 0 || m[1] != m[2] {
		t.Errorf("tables hold %s rows, the sources' accepted entries are %s", m[1], m[2])
	}
}

// TestDemoInterrupted: Ctrl-C (the context) stops the demo early; it still
// flushes, lists the tables and exits cleanly.
func TestDemoInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("demo streams for seconds")
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2*time.Second, cancel)
	var out, errOut bytes.Buffer
	start := time.Now()
	if err := runDemo(ctx, []string{"--duration", "5m", "--data-dir", t.TempDir(), "--native", "1", "--legacy", "1"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("demo took %v after Ctrl-C", d)
	}
	s := out.String()
	for _, want := range []string{"interrupted: stopping the sources", "flushed: success=true", "(stopped early by Ctrl-C)"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
