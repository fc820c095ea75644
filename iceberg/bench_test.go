package iceberg

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// benchRows is the size of one benchmarked commit: 200 W1 batches of 1,000.
const benchRows = 200_000

// benchEntries returns the W1 entries of the benchmark, their JSON payload
// size (before + after + row id + table name) and their encoded size in the
// binary codec.
func benchEntries() (entries []codec.Entry, payload, encoded int64) {
	entries = workload.Entries(0, benchRows)
	for i := range entries {
		e := &entries[i]
		payload += int64(len(e.Before) + len(e.After) + len(e.RowID) + len(e.Table))
		encoded += int64(e.EncodedSize())
	}
	return entries, payload, encoded
}

// benchFlush groups entries into one flush of source "bench", batches of
// 1,000 numbered from firstBatch.
func benchFlush(id uint64, entries []codec.Entry, firstBatch uint64) *sink.Flush {
	f := &sink.Flush{ID: id, Reason: "bench", Time: time.Now(), Watermarks: map[string]sink.Watermark{}}
	idx := map[string]int{}
	for i := range entries {
		e := entries[i]
		name := string(e.Table)
		k, ok := idx[name]
		if !ok {
			k = len(f.Tables)
			idx[name] = k
			f.Tables = append(f.Tables, sink.Table{Name: name, Rows: make([]sink.Row, 0, len(entries)/8+1)})
		}
		seq := firstBatch + uint64(i/workload.W1BatchSize)
		f.Tables[k].Rows = append(f.Tables[k].Rows, sink.Row{SourceID: "bench", BatchSeq: seq, Entry: e})
		sink.MergeWatermark(f.Watermarks, "bench", sink.Watermark{BatchSeq: seq, EntrySeq: e.Sequence})
	}
	return f
}

func reportThroughput(b *testing.B, rows, payload, encoded int64) {
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(rows)/sec, "rows/s")
	b.ReportMetric(float64(payload)/sec/1e6, "payloadMB/s")
	b.ReportMetric(float64(encoded)/sec/1e6, "w1MB/s")
}

// BenchmarkCommitW1 measures one sink Commit of 200,000 W1 rows (8 tables):
// watermark check, sorting, Parquet writing (stagewrite.go) and the catalog
// commits. MB/s (SetBytes) counts the JSON payload: before + after + row id +
// table name bytes; w1MB/s counts the binary-codec encoded size (~210 B/entry).
func BenchmarkCommitW1(b *testing.B) {
	entries, payload, encoded := benchEntries()
	s := openTestSink(b, b.TempDir(), nil)
	ctx := context.Background()
	b.SetBytes(payload)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := benchFlush(uint64(i+1), entries, uint64(i*benchRows/workload.W1BatchSize+1))
		b.StartTimer()
		res, err := s.Commit(ctx, f)
		if err != nil {
			b.Fatal(err)
		}
		if res.RowsWritten != benchRows {
			b.Fatalf("wrote %d rows", res.RowsWritten)
		}
	}
	reportThroughput(b, benchRows, payload, encoded)
}

// BenchmarkDirectAppendW1 appends the same rows, as ready Arrow records (one
// per table, built before the timer), with plain iceberg-go
// Transaction.Append + Commit on tables of the same layout: the ceiling of
// the sink.
func BenchmarkDirectAppendW1(b *testing.B) {
	entries, payload, encoded := benchEntries()
	s := openTestSink(b, b.TempDir(), nil)
	ctx := context.Background()
	f := benchFlush(1, entries, 1)
	recs := make([]arrow.RecordBatch, len(f.Tables))
	for k, t := range f.Tables {
		rows := make([]*sink.Row, len(t.Rows))
		for i := range t.Rows {
			rows[i] = &t.Rows[i]
		}
		rec, err := buildRecord(s.schema, rows, f.Time.UnixMicro(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer rec.Release()
		recs[k] = rec
		// Create the table with the sink's layout.
		if _, err := s.loadOrCreate(ctx, t.Name, t.Name); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(payload)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, t := range f.Tables {
			tbl, err := s.cat.LoadTable(ctx, s.Identifier(t.Name))
			if err != nil {
				b.Fatal(err)
			}
			rdr, err := array.NewRecordReader(s.schema, []arrow.RecordBatch{recs[k]})
			if err != nil {
				b.Fatal(err)
			}
			txn := tbl.NewTransaction()
			if err := txn.Append(ctx, rdr, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := txn.Commit(ctx); err != nil {
				b.Fatal(err)
			}
			rdr.Release()
		}
	}
	reportThroughput(b, benchRows, payload, encoded)
}

// BenchmarkBuildRecord measures the sink's Arrow building alone: sorting
// check plus columns for 25,000 W1 rows (one table's share of a 200,000-row
// commit).
func BenchmarkBuildRecord(b *testing.B) {
	entries, _, _ := benchEntries()
	f := benchFlush(1, entries, 1)
	t := f.Tables[0]
	rows := make([]*sink.Row, len(t.Rows))
	var payload int64
	for i := range t.Rows {
		rows[i] = &t.Rows[i]
		payload += int64(len(t.Rows[i].Before) + len(t.Rows[i].After) + len(t.Rows[i].RowID) + len(t.Rows[i].Table))
	}
	sc, err := changelogArrowSchema()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(payload)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sortRows(rows)
		rec, err := buildRecord(sc, rows, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		rec.Release()
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkCommitSourceWatermarks measures the commit of one small staged
// flush to a table that holds the watermarks of N sources (one table
// property each): what a table costs to commit once many sources have
// written to it. Compare sources=8 with sources=10000.
func BenchmarkCommitSourceWatermarks(b *testing.B) {
	for _, n := range []int{8, 10_000} {
		b.Run(strconv.Itoa(n)+"-sources", func(b *testing.B) {
			ctx := context.Background()
			s := openTestSink(b, b.TempDir(), func(c *Config) { c.Logger = quietLogger() })
			// One row per source into "users": n watermark properties.
			f := &sink.Flush{ID: 1, Reason: "bench", Time: time.Now(), Watermarks: map[string]sink.Watermark{}}
			tb := sink.Table{Name: "users"}
			e := workload.Entries(0, 1)[0]
			for i := 0; i < n; i++ {
				tb.Rows = append(tb.Rows, sink.Row{SourceID: fmt.Sprintf("source-%05d", i), BatchSeq: 1, Entry: e})
			}
			f.Tables = []sink.Table{tb}
			if _, err := s.Commit(ctx, f); err != nil {
				b.Fatal(err)
			}
			entries := workload.Entries(0, 800)
			var users []codec.Entry
			for _, e := range entries {
				if string(e.Table) == "users" {
					users = append(users, e)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				fl := benchFlush(uint64(i+2), users, uint64(i+2))
				st, err := s.Stage(ctx, fl)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := s.CommitStaged(ctx, []sink.Staged{st}, sink.CommitInfo{ID: uint64(i + 2), Reason: "bench"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompactMerge measures one compaction merge of 16 staged files of
// the users table (3 sources, about 1,000 rows per source and file): reading,
// the k-way merge and Parquet writing.
func BenchmarkCompactMerge(b *testing.B) {
	ctx := context.Background()
	s, tbl, tasks, rows := compactBenchTable(b)
	b.ResetTimer()
	for range b.N {
		gr, err := s.mergeGroup(ctx, tbl, tasks)
		if err != nil {
			b.Fatal(err)
		}
		s.removeFiles(ctx, tbl, gr.NewDataFiles)
	}
	b.ReportMetric(float64(rows)/(b.Elapsed().Seconds()/float64(b.N)), "rows/s")
}

// BenchmarkCompactRead measures the read side of that merge, the sink's
// own reader (direct) against iceberg-go's scan.
func BenchmarkCompactRead(b *testing.B) {
	ctx := context.Background()
	_, tbl, tasks, rows := compactBenchTable(b)
	for _, direct := range []bool{true, false} {
		b.Run(map[bool]string{true: "direct", false: "scan"}[direct], func(b *testing.B) {
			for range b.N {
				m, err := newMerger(ctx, tbl, tasks, map[bool]mergeReads{true: readDirectOrScan, false: readScanOnly}[direct], nil)
				if err != nil {
					b.Fatal(err)
				}
				if m.direct != direct {
					b.Fatalf("read directly: %v", m.direct)
				}
				for rec, err := range m.batches() {
					if err != nil {
						b.Fatal(err)
					}
					rec.Release()
				}
				m.close()
			}
			b.ReportMetric(float64(rows)/(b.Elapsed().Seconds()/float64(b.N)), "rows/s")
		})
	}
}

// compactBenchTable commits 16 flushes of 24,000 users rows (three
// sources), each a file, and returns the table's files to merge.
func compactBenchTable(b *testing.B) (*Sink, *table.Table, []table.FileScanTask, int64) {
	ctx := context.Background()
	s := openTestSink(b, b.TempDir(), func(c *Config) { c.Maintenance.CompactDisabled = true })
	for i := 1; i <= 16; i++ {
		f := w1Flush(uint64(i), testSources, uint64(i), 1, 8000)
		f.Tables = slices.DeleteFunc(f.Tables, func(t sink.Table) bool { return t.Name != "users" })
		if _, err := s.Commit(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
	tbl, tasks := tableTasks(b, s, "users")
	var rows int64
	for _, t := range tasks {
		rows += t.File.Count()
	}
	return s, tbl, tasks, rows
}
