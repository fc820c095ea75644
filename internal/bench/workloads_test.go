package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// checkKeyed checks rows committed by a keyed run: every entry once per
// source, numbered 1..n, over the keyed tables and key space, with all three
// operations and sources sharing keys.
func checkKeyed(t *testing.T, recs []jsonl.Record, sources, perSource int, tablePrefix string) {
	t.Helper()
	seqs := map[string]map[uint64]bool{}
	ops := map[string]int{}
	keySources := map[string]map[string]bool{}
	for _, r := range recs {
		if seqs[r.SourceID] == nil {
			seqs[r.SourceID] = map[uint64]bool{}
		}
		if seqs[r.SourceID][r.EntrySeq] {
			t.Fatalf("%s entry %d twice", r.SourceID, r.EntrySeq)
		}
		seqs[r.SourceID][r.EntrySeq] = true
		ops[r.Op]++
		if !strings.HasPrefix(r.Table, tablePrefix) || !strings.HasPrefix(r.RowID, "key-") {
			t.Fatalf("row %s/%s", r.Table, r.RowID)
		}
		k := r.Table + "/" + r.RowID
		if keySources[k] == nil {
			keySources[k] = map[string]bool{}
		}
		keySources[k][r.SourceID] = true
	}
	if len(seqs) != sources {
		t.Fatalf("%d sources, want %d", len(seqs), sources)
	}
	for src, s := range seqs {
		if len(s) != perSource || !s[1] || !s[uint64(perSource)] {
			t.Fatalf("%s: %d entries, want 1..%d", src, len(s), perSource)
		}
	}
	shared := 0
	for _, s := range keySources {
		if len(s) > 1 {
			shared++
		}
	}
	if ops["INSERT"] == 0 || ops["UPDATE"] == 0 || ops["DELETE"] == 0 || shared == 0 {
		t.Fatalf("ops %v, %d keys written by several sources", ops, shared)
	}
}

func TestKeyedWorkload(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	s, err := Run(context.Background(), Config{Addr: in.Addr, Sources: 2, Entries: 4000, BatchSize: 500,
		Workload: WorkloadKeyed, Keys: 1000, TablePrefix: "bench_"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries != 4000 || s.Errors != 0 {
		t.Fatalf("client: %+v", s)
	}
	fs, err := Frames(context.Background(), Config{Addr: in.Addr, Sources: 2, Entries: 4000, BatchSize: 500,
		Workload: WorkloadKeyed, Keys: 1000, TablePrefix: "bench_"})
	if err != nil {
		t.Fatal(err)
	}
	if fs.Entries != 4000 || fs.Errors != 0 {
		t.Fatalf("frames: %+v", fs)
	}
	in.Stop()
	var client, frames []jsonl.Record
	for _, r := range in.Records() {
		if strings.Contains(r.SourceID, "-frames-") {
			frames = append(frames, r)
		} else {
			client = append(client, r)
		}
	}
	checkKeyed(t, client, 2, 2000, "bench_")
	checkKeyed(t, frames, 2, 2000, "bench_")
}

func TestWorkloadErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		run  func(context.Context, Config) (*Summary, error)
		want string
	}{
		{Config{Addr: "127.0.0.1:1", Entries: 1, Workload: "w2"}, Run, `workload "w2"`},
		{Config{Addr: "127.0.0.1:1", Entries: 1, Workload: WorkloadKeyed, Keys: -1}, Frames, "keys"},
		{Config{Addr: "127.0.0.1:1", Entries: 1, Workload: WorkloadKeyed}, RawStreamConfig, "raw baseline"},
	} {
		if _, err := tc.run(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one with %q", tc.cfg, err, tc.want)
		}
	}
}
