package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestScanMirror: `lakehouse scan --mirror` prints a table's current state
// from its mirror, with the mirror's typed columns: an updated key shows
// its latest values once, a deleted key is gone. Before, scan read only
// changelog tables, and pointing it at the mirror's namespace failed with
// `column "source_id" missing`.
func TestScanMirror(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	commitRows(t, dir, "users",
		scanRow(1, codec.OpInsert, "u1", `{"name":"Ada","city":"Paris","visits":1}`),
		scanRow(2, codec.OpInsert, "u2", `{"name":"Bob","city":"Oslo","visits":2}`),
		scanRow(3, codec.OpUpdate, "u1", `{"name":"Ada","city":"Lyon","visits":3}`),
		scanRow(4, codec.OpDelete, "u2", ""),
	)

	var out, errOut bytes.Buffer
	if err := runScan(ctx, []string{"--data-dir", dir, "--table", "users", "--mirror", "--json"}, &out, &errOut); err != nil {
		t.Fatalf("scan --mirror --json: %v\n%s", err, errOut.String())
	}
	var rows []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		rows = append(rows, m)
	}
	if len(rows) != 1 || rows[0]["row_id"] != "u1" || rows[0]["city"] != "Lyon" || rows[0]["visits"] != float64(3) || rows[0]["_op"] != "UPDATE" {
		t.Fatalf("mirror of users: %v, want u1 only, in Lyon with 3 visits", rows)
	}

	out.Reset()
	if err := runScan(ctx, []string{"--data-dir", dir, "--table", "users", "--mirror"}, &out, &errOut); err != nil {
		t.Fatalf("scan --mirror: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ROW_ID") || !strings.Contains(lines[0], "CITY") || !strings.Contains(lines[1], "Lyon") {
		t.Fatalf("scan --mirror printed:\n%s", out.String())
	}
}

// TestScanNamesTablesWhenMissing: scanning a table that does not exist
// names the tables that do, and the likely one: `bench` writes bench_users,
// and the README's scan of users failed with only "table does not exist".
func TestScanNamesTablesWhenMissing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	commitRows(t, dir, "bench_users", scanRow(1, codec.OpInsert, "u1", `{"a":1}`))
	for _, extra := range [][]string{nil, {"--mirror"}} {
		var out, errOut bytes.Buffer
		err := runScan(ctx, append([]string{"--data-dir", dir, "--table", "users"}, extra...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "did you mean bench_users?") || !strings.Contains(err.Error(), "tables: bench_users") {
			t.Errorf("scan %v of a missing table: %v, want the existing tables named", extra, err)
		}
	}
}

// scanRow is one entry of source "src", batch 1, for commitRows; an empty
// after leaves the row image null.
func scanRow(seq uint64, op codec.Op, key, after string) sink.Row {
	e := codec.Entry{Sequence: seq, Timestamp: 1_700_000_000_000 + seq, Op: op, RowID: []byte(key)}
	if after != "" {
		e.After = []byte(after)
	}
	return sink.Row{SourceID: "src", BatchSeq: 1, Entry: e}
}

// commitRows commits rows to table in a sink (with mirrors) on dir, in one
// flush whose watermark is the last row's, and closes the sink.
func commitRows(t *testing.T, dir, table string, rows ...sink.Row) {
	t.Helper()
	ctx := context.Background()
	s, err := iceberg.Open(ctx, iceberg.Config{DataDir: dir, CatalogType: "sql", Mirror: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		rows[i].Entry.Table = []byte(table)
	}
	last := rows[len(rows)-1]
	if _, err := s.Commit(ctx, &sink.Flush{ID: 1, Time: time.Now(),
		Watermarks: map[string]sink.Watermark{last.SourceID: {BatchSeq: last.BatchSeq, EntrySeq: last.Entry.Sequence}},
		Tables:     []sink.Table{{Name: table, Rows: rows}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
