package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/bench"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestBenchTablesPrefixed runs bench against a server: its rows go to
// bench_* tables by default, never into the W1 names real data may use.
func TestBenchTablesPrefixed(t *testing.T) {
	in := servertest.Start(t)
	var out, errb bytes.Buffer
	if err := runBench(t.Context(), []string{"--addr", in.Addr, "--entries", "2000", "--progress", "0"}, &out, &errb, nil); err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	in.Stop()
	recs := in.Records()
	if len(recs) != 2000 {
		t.Fatalf("%d rows committed, want 2000", len(recs))
	}
	for _, r := range recs {
		if !strings.HasPrefix(r.Table, "bench_") {
			t.Fatalf("bench wrote to table %q", r.Table)
		}
	}
}

// TestBenchRateJSON runs an open-loop bench and reads its JSON summary.
func TestBenchRateJSON(t *testing.T) {
	in := servertest.Start(t)
	var out, errb bytes.Buffer
	if err := runBench(t.Context(), []string{"--addr", in.Addr, "--rate", "20000", "--duration", "500ms", "--sources", "2",
		"--progress", "0", "--json"}, &out, &errb, nil); err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	var s bench.Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if s.Mode != "frames" || s.TargetEntriesPerSec != 20000 || s.Entries == 0 || s.CPU == nil || s.CPU.GeneratorSeconds <= 0 {
		t.Fatalf("summary %s", out.String())
	}
	if err := runBench(t.Context(), []string{"--addr", in.Addr, "--rate", "-1"}, &out, &errb, nil); err == nil {
		t.Fatal("negative rate accepted")
	}
}

// TestBenchGraceValidated: --grace must be positive.
func TestBenchGraceValidated(t *testing.T) {
	var out, errb bytes.Buffer
	for _, g := range []string{"0s", "-1s"} {
		err := runBench(t.Context(), []string{"--addr", "127.0.0.1:1", "--duration", "1s", "--grace", g}, &out, &errb, nil)
		if err == nil || !strings.Contains(err.Error(), "--grace") {
			t.Errorf("--grace %s: %v", g, err)
		}
	}
}

// TestBenchKeyedFlags checks --workload and --keys.
func TestBenchKeyedFlags(t *testing.T) {
	in := servertest.Start(t)
	var out, errb bytes.Buffer
	if err := runBench(t.Context(), []string{"--addr", in.Addr, "--workload", "keyed", "--keys", "500", "--entries", "2000",
		"--frames", "--progress", "0", "--json"}, &out, &errb, nil); err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	in.Stop()
	ops := map[string]int{}
	for _, r := range in.Records() {
		ops[r.Op]++
		if !strings.HasPrefix(r.RowID, "key-") || !strings.HasPrefix(r.Table, "bench_") {
			t.Fatalf("row %s/%s", r.Table, r.RowID)
		}
	}
	if ops["DELETE"] == 0 || ops["UPDATE"] == 0 || ops["INSERT"]+ops["UPDATE"]+ops["DELETE"] != 2000 {
		t.Fatalf("ops %v", ops)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--workload", "w9"}, `--workload "w9"`},
		{[]string{"--keys", "10"}, "--keys goes with --workload keyed"},
		{[]string{"--workload", "keyed", "--keys", "0"}, "--keys 0"},
		{[]string{"--workload", "keyed", "--raw"}, "not --raw or --compare"},
	} {
		err := runBench(t.Context(), append([]string{"--addr", in.Addr, "--entries", "10"}, tc.args...), &out, &errb, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one with %q", tc.args, err, tc.want)
		}
	}
}
