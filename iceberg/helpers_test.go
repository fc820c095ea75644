package iceberg

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// testSource describes one source of generated flushes.
type testSource struct {
	id    string
	shard string
	// offset shifts the W1 entry numbers of the source, so sources differ.
	offset int64
}

var testSources = []testSource{
	{id: "do-alpha", shard: "shard-1"},
	{id: "do-beta", shard: "", offset: 100000},
	{id: "do-gamma", shard: "shard-3", offset: 200000},
}

// w1Flush builds a flush holding, for each source, batches
// [firstBatch, firstBatch+nBatches) of perBatch W1 entries each, grouped by
// table in arrival order, with the flush's watermarks.
func w1Flush(id uint64, sources []testSource, firstBatch, nBatches uint64, perBatch int64) *sink.Flush {
	f := &sink.Flush{
		ID:         id,
		Reason:     "test",
		Time:       time.Date(2026, 11, 28, 12, 0, 0, int(id)*1000, time.UTC),
		Watermarks: make(map[string]sink.Watermark),
	}
	byTable := make(map[string]*sink.Table)
	var order []string
	for _, src := range sources {
		for b := firstBatch; b < firstBatch+nBatches; b++ {
			start := src.offset + int64(b-1)*perBatch
			for _, e := range workload.Entries(start, perBatch) {
				name := string(e.Table)
				t := byTable[name]
				if t == nil {
					t = &sink.Table{Name: name}
					byTable[name] = t
					order = append(order, name)
				}
				t.Rows = append(t.Rows, sink.Row{SourceID: src.id, ShardName: src.shard, BatchSeq: b, Entry: e})
				sink.MergeWatermark(f.Watermarks, src.id, sink.Watermark{BatchSeq: b, EntrySeq: e.Sequence})
			}
		}
	}
	for _, name := range order {
		f.Tables = append(f.Tables, *byTable[name])
	}
	return f
}

// rowKey is what must survive a round trip, as one comparable value.
type rowKey struct {
	table, source, shard string
	batchSeq, entrySeq   uint64
	op, rowID            string
	before, after        string // "<nil>" for null
	eventMs              int64
}

func optString(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	return string(b)
}

func optPtr(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// flushKeys returns the multiset of rows of flushes.
func flushKeys(flushes ...*sink.Flush) map[rowKey]int {
	out := make(map[rowKey]int)
	for _, f := range flushes {
		for _, t := range f.Tables {
			for _, r := range t.Rows {
				out[rowKey{
					table: t.Name, source: r.SourceID, shard: r.ShardName, batchSeq: r.BatchSeq,
					entrySeq: r.Sequence, op: r.Op.String(), rowID: string(r.RowID),
					before: optString(r.Before), after: optString(r.After), eventMs: int64(r.Timestamp),
				}]++
			}
		}
	}
	return out
}

// scanKeys reads every table of the sink back through iceberg-go.
func scanKeys(t *testing.T, s *Sink) map[rowKey]int {
	t.Helper()
	ctx := context.Background()
	infos, err := s.Tables(ctx)
	if err != nil {
		t.Fatalf("Tables: %v", err)
	}
	out := make(map[rowKey]int)
	for _, info := range infos {
		recs, err := s.Scan(ctx, info.Name, 0)
		if err != nil {
			t.Fatalf("Scan %s: %v", info.Name, err)
		}
		if int64(len(recs)) != info.Rows {
			t.Errorf("table %s: scanned %d rows, snapshot summary says %d", info.Name, len(recs), info.Rows)
		}
		for _, r := range recs {
			out[rowKey{
				table: info.OriginalName, source: r.SourceID, shard: r.ShardName, batchSeq: r.BatchSeq,
				entrySeq: r.EntrySeq, op: r.Op, rowID: r.RowID,
				before: optPtr(r.Before), after: optPtr(r.After), eventMs: r.EventTime.UnixMilli(),
			}]++
		}
	}
	return out
}

// diffKeys reports the differences between two multisets.
func diffKeys(t *testing.T, want, got map[rowKey]int) {
	t.Helper()
	keys := slices.Collect(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	bad := 0
	for _, k := range keys {
		if want[k] != got[k] {
			if bad < 10 {
				t.Errorf("row %+v: want %d copies, got %d", k, want[k], got[k])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d distinct rows differ (want %d rows, got %d)", bad, len(keys), total(want), total(got))
	}
}

func total(m map[rowKey]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTestSink opens a sink on dir with the default SQLite catalog and
// file warehouse.
func openTestSink(t testing.TB, dir string, mod func(*Config)) *Sink {
	t.Helper()
	cfg := Config{DataDir: dir, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustCommit(t *testing.T, s *Sink, f *sink.Flush) sink.Result {
	t.Helper()
	res, err := s.Commit(context.Background(), f)
	if err != nil {
		t.Fatalf("Commit flush %d: %v", f.ID, err)
	}
	return res
}

func flushRows(f *sink.Flush) int64 {
	var n int64
	for _, t := range f.Tables {
		n += int64(len(t.Rows))
	}
	return n
}
