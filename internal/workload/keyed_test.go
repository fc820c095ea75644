package workload

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

func keyedBatches(t *testing.T, cfg KeyedConfig, n int) (*Keyed, []KeyedBatch) {
	t.Helper()
	g, err := NewKeyed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]KeyedBatch, n)
	for i := range out {
		out[i] = g.Next()
	}
	return g, out
}

func TestKeyedDeterministic(t *testing.T) {
	cfg := KeyedConfig{Seed: 7, Keys: 500, BatchSize: 100}
	_, a := keyedBatches(t, cfg, 30)
	_, b := keyedBatches(t, cfg, 30)
	for i := range a {
		ea, _ := codec.EncodeBatch(&codec.Batch{SourceID: []byte(a[i].SourceID), Sequence: a[i].Sequence, Entries: a[i].Entries})
		eb, _ := codec.EncodeBatch(&codec.Batch{SourceID: []byte(b[i].SourceID), Sequence: b[i].Sequence, Entries: b[i].Entries})
		if !bytes.Equal(ea, eb) {
			t.Fatalf("batch %d differs between two runs of seed 7", i)
		}
	}
	cfg.Seed = 8
	_, c := keyedBatches(t, cfg, 1)
	if string(c[0].Entries[5].After) == string(a[0].Entries[5].After) && c[0].SourceID == a[0].SourceID {
		t.Error("seeds 7 and 8 make the same batch")
	}
}

// TestKeyedHistory replays the workload with a model of its own and checks
// the operations (updates and deletes of live keys, inserts of dead ones),
// the befores, the sequences, the mix, and that event times go backwards
// across sources.
func TestKeyedHistory(t *testing.T) {
	g, batches := keyedBatches(t, KeyedConfig{Seed: 1, Keys: 2000, BatchSize: 500}, 120)
	type st struct {
		ver  mirrormodel.Version
		live bool
		row  string
	}
	state := map[string]*st{}
	lastSeq := map[string]uint64{}
	lastBatch := map[string]uint64{}
	ops := map[codec.Op]int{}
	stale, tables := 0, map[string]bool{}
	for _, b := range batches {
		if b.Sequence != lastBatch[b.SourceID]+1 {
			t.Fatalf("%s: batch %d after %d", b.SourceID, b.Sequence, lastBatch[b.SourceID])
		}
		lastBatch[b.SourceID] = b.Sequence
		for i := range b.Entries {
			e := &b.Entries[i]
			if e.Sequence != lastSeq[b.SourceID]+1 {
				t.Fatalf("%s: entry %d after %d", b.SourceID, e.Sequence, lastSeq[b.SourceID])
			}
			lastSeq[b.SourceID] = e.Sequence
			ops[e.Op]++
			tables[string(e.Table)] = true
			k := string(e.Table) + "/" + string(e.RowID)
			s := state[k]
			if s == nil {
				s = &st{}
				state[k] = s
			}
			live := s.live
			if (e.Op == codec.OpInsert) == live {
				t.Fatalf("%s %s of a key that is live=%v", e.Op, k, live)
			}
			if e.Op != codec.OpInsert && string(e.Before) != s.row {
				t.Fatalf("%s %s: before %s, the key's row is %s", e.Op, k, e.Before, s.row)
			}
			if (e.After != nil) != (e.Op != codec.OpDelete) || (e.After != nil && !json.Valid(e.After)) {
				t.Fatalf("%s %s: after %q", e.Op, k, e.After)
			}
			v := mirrormodel.Version{EventTimeMs: int64(e.Timestamp), SourceID: b.SourceID, EntrySeq: e.Sequence}
			if s.row != "" || s.ver != (mirrormodel.Version{}) {
				if v.Compare(s.ver) < 0 {
					stale++
					if e.Op == codec.OpInsert {
						t.Fatalf("insert %s older than the key's delete", k)
					}
					continue
				}
			}
			s.ver, s.live, s.row = v, e.Op != codec.OpDelete, string(e.After)
		}
	}
	n := float64(ops[codec.OpInsert] + ops[codec.OpUpdate] + ops[codec.OpDelete])
	if u, d := float64(ops[codec.OpUpdate])/n, float64(ops[codec.OpDelete])/n; u < 0.5 || u > 0.65 || d < 0.15 || d > 0.25 {
		t.Errorf("mix: %v", ops)
	}
	if stale == 0 {
		t.Error("no change older than its key's newest: event times never go backwards across sources")
	}
	if len(tables) != 3 {
		t.Errorf("tables %v", tables)
	}
	live := 0
	for _, s := range state {
		if s.live {
			live++
		}
	}
	if live != g.Live() {
		t.Errorf("replay has %d live keys, the generator %d", live, g.Live())
	}
	if live < 1000 {
		t.Errorf("%d of 2000 keys live: the warm-up fills half the key space", live)
	}
	t.Logf("ops %v, %d stale, %d live keys", ops, stale, live)
}

// TestKeyedModelIndependentOfCommits checks the property the integration
// tests rely on: however the changes are grouped into commits (in the order
// generated), the contract's mirror state is the same, and is the newest
// change of each key (a row unless that change is a delete).
func TestKeyedModelIndependentOfCommits(t *testing.T) {
	for seed := range uint64(6) {
		g, batches := keyedBatches(t, KeyedConfig{Seed: seed, Keys: 300, BatchSize: 50, MaxSkew: 500 * time.Millisecond}, 200)
		var all []mirrormodel.Change
		for _, b := range batches {
			for i := range b.Entries {
				all = append(all, mirrormodel.ChangeOf(b.SourceID, &b.Entries[i]))
			}
		}
		rng := rand.New(rand.NewPCG(seed, 99))
		for trial := range 5 {
			m := mirrormodel.New()
			for i := 0; i < len(all); {
				n := 1 + rng.IntN(1+[]int{1, 10, 200, 2000, len(all)}[trial])
				m.Commit(all[i:min(i+n, len(all))])
				i += n
			}
			if d := g.Model().Diff(m); d != "" {
				t.Fatalf("seed %d trial %d: grouping changes the state: %s", seed, trial, d)
			}
		}
		newest := map[string]mirrormodel.Change{}
		for _, c := range all {
			if w, ok := newest[c.Table+"/"+c.RowID]; !ok || c.Version.Compare(w.Version) > 0 {
				newest[c.Table+"/"+c.RowID] = c
			}
		}
		live := 0
		for k, c := range newest {
			table, id, _ := strings.Cut(k, "/")
			r, ok := g.Model().Rows(table)[id]
			if ok != (c.Op != codec.OpDelete) || ok && r.Version != c.Version {
				t.Fatalf("seed %d: %s: model %+v, newest change %+v", seed, k, r, c)
			}
			if ok {
				live++
			}
		}
		if live != g.Live() {
			t.Fatalf("seed %d: %d live rows, generator says %d", seed, live, g.Live())
		}
	}
}

func TestKeyedRows(t *testing.T) {
	count := func(cfg KeyedConfig) (newField, typeChange int) {
		_, batches := keyedBatches(t, cfg, 40)
		for _, b := range batches {
			for _, e := range b.Entries {
				if e.After == nil {
					continue
				}
				var row map[string]any
				d := json.NewDecoder(bytes.NewReader(e.After))
				d.UseNumber()
				if err := d.Decode(&row); err != nil {
					t.Fatalf("%s: %v", e.After, err)
				}
				if _, ok := row["extra_0"]; ok {
					newField++
				}
				changed := false
				for _, f := range []string{"age", "edits"} {
					if _, ok := row[f].(json.Number); !ok {
						changed = true
					}
				}
				if s, ok := row["score"].(json.Number); !ok {
					changed = true
				} else if !strings.Contains(string(s), ".") {
					t.Fatalf("integral float in %s", e.After)
				}
				if ts, ok := row["updated_at"].(string); ok {
					if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || ts[len(ts)-1] != 'Z' {
						t.Fatalf("updated_at %q: %v", ts, err)
					}
				} else {
					changed = true
				}
				if _, ok := row["address"].(map[string]any); !ok {
					changed = true
				}
				if _, ok := row["tags"].([]any); !ok {
					changed = true
				}
				if _, ok := row["active"].(bool); !ok {
					changed = true
				}
				if _, ok := row["name"].(string); !ok {
					changed = true
				}
				if changed {
					typeChange++
				}
			}
		}
		return
	}
	cfg := KeyedConfig{Seed: 3, Keys: 5000}
	if nf, tc := count(cfg); nf == 0 || tc == 0 {
		t.Errorf("default: %d rows with a new field, %d with a type change; want some of each", nf, tc)
	}
	cfg.NoNewFields, cfg.NoTypeChanges = true, true
	if nf, tc := count(cfg); nf != 0 || tc != 0 {
		t.Errorf("switched off: %d rows with a new field, %d with a type change", nf, tc)
	}
}

func TestKeyedConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  KeyedConfig
		want string
	}{
		{KeyedConfig{Keys: -1}, "keys"},
		{KeyedConfig{Keys: maxKeyedKeys + 1}, "keys"},
		{KeyedConfig{Sources: -2}, "sources"},
		{KeyedConfig{BatchSize: -1}, "batch size"},
		{KeyedConfig{Mix: Mix{Update: 1, Delete: -1, Insert: 1}}, "mix"},
		{KeyedConfig{Mix: Mix{Update: 1}}, "inserts"},
	} {
		if _, err := NewKeyed(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %q", tc.cfg, err, tc.want)
		}
	}
}

func TestKeyedSmallKeySpace(t *testing.T) {
	// One key, one source, no skew: the key alternates between insert and
	// update/delete and never runs out of choices.
	g, batches := keyedBatches(t, KeyedConfig{Seed: 2, Keys: 1, Sources: 1, BatchSize: 10, MaxSkew: -1, Tables: []string{"t"}}, 20)
	if len(g.Sources()) != 1 || g.Tables()[0] != "t" || len(batches[19].Entries) != 10 {
		t.Fatal("shape")
	}
	if g.Model().Len("t") != g.Live() {
		t.Fatalf("model %d rows, %d live", g.Model().Len("t"), g.Live())
	}
}
