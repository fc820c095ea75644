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

// TestTablesNamesMirrors: `lakehouse tables` names each table's mirror
// table ("-" for a table without one), in text and JSON. Before, it listed
// the changelog tables only and gave no hint of the mirrors, which serve
// now writes by default.
func TestTablesNamesMirrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	commit := func(mirror bool, table string) {
		t.Helper()
		s, err := iceberg.Open(ctx, iceberg.Config{DataDir: dir, Mirror: mirror, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		e := codec.Entry{Sequence: 1, Timestamp: 1_700_000_000_000, Op: codec.OpInsert, Table: []byte(table), RowID: []byte("k"), After: []byte(`{"a":1}`)}
		if _, err := s.Commit(ctx, &sink.Flush{ID: 1, Time: time.Now(), Watermarks: map[string]sink.Watermark{table: {BatchSeq: 1, EntrySeq: 1}},
			Tables: []sink.Table{{Name: table, Rows: []sink.Row{{SourceID: table, BatchSeq: 1, Entry: e}}}}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	commit(true, "users")
	commit(false, "orders")

	var out, errOut bytes.Buffer
	if err := runTables(ctx, []string{"--data-dir", dir}, &out, &errOut); err != nil {
		t.Fatalf("tables: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "MIRROR") || !strings.HasSuffix(lines[1], " -") ||
		!strings.HasPrefix(lines[1], "orders") || !strings.HasSuffix(lines[2], " cdc_current.users") {
		t.Fatalf("tables printed:\n%s", out.String())
	}

	out.Reset()
	if err := runTables(ctx, []string{"--data-dir", dir, "--json"}, &out, &errOut); err != nil {
		t.Fatalf("tables --json: %v\n%s", err, errOut.String())
	}
	var rows []struct {
		Name   string `json:"name"`
		Rows   int64  `json:"rows"`
		Mirror string `json:"mirror"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0] != (struct {
		Name   string `json:"name"`
		Rows   int64  `json:"rows"`
		Mirror string `json:"mirror"`
	}{"orders", 1, ""}) || rows[1].Name != "users" || rows[1].Mirror != "cdc_current.users" {
		t.Fatalf("tables --json: %+v", rows)
	}
}
