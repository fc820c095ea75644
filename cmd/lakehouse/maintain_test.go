package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// commitW1 commits flushes 1..n of W1 entries of one source, one flush per
// Iceberg snapshot, so that every table has n small data files.
func commitW1(t *testing.T, sk *iceberg.Sink, n int) {
	t.Helper()
	for i := range n {
		f := &sink.Flush{ID: uint64(i + 1), Reason: "test", Time: time.Now(), Watermarks: map[string]sink.Watermark{}}
		byTable := map[string]*sink.Table{}
		for _, e := range workload.Entries(int64(i*16), 16) {
			tb := byTable[string(e.Table)]
			if tb == nil {
				tb = &sink.Table{Name: string(e.Table)}
				byTable[string(e.Table)] = tb
			}
			tb.Rows = append(tb.Rows, sink.Row{SourceID: "s", BatchSeq: uint64(i + 1), Entry: e})
			sink.MergeWatermark(f.Watermarks, "s", sink.Watermark{BatchSeq: uint64(i + 1), EntrySeq: e.Sequence})
		}
		for _, tb := range byTable {
			f.Tables = append(f.Tables, *tb)
		}
		if _, err := sk.Commit(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMaintainCoordinated: `lakehouse maintain --coordination catalog` takes
// the maintenance lock of coordinated instances. While an instance is in
// the middle of compacting "users" (held before its commit), a maintain
// pass skips "users" (its metadata is unchanged and the output says so) and
// maintains the other tables. Without the lock it compacted the same files
// beside the instance. --coordination needs a PostgreSQL catalog.
func TestMaintainCoordinated(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	entered, proceed := make(chan struct{}), make(chan struct{})
	cfg := iceberg.Config{DataDir: t.TempDir(), CatalogURI: dsn, Warehouse: wh, ExclusiveMaintenance: true,
		BeforeRewriteCommit: func(table string) error {
			if table == "users" {
				entered <- struct{}{}
				<-proceed
			}
			return nil
		}}
	cfg.Maintenance.CompactMinFiles = 4
	cfg.Maintenance.OrphanDisabled = true
	inst, err := iceberg.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	commitW1(t, inst, 6)
	location := func(name string) string {
		tbl, err := inst.LoadTable(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return tbl.MetadataLocation()
	}
	usersBefore, ordersBefore := location("users"), location("orders")

	done := make(chan error, 1)
	go func() { done <- inst.MaintainTable(ctx, "users", iceberg.MaintainOptions{}) }()
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the instance's compaction never reached its commit")
	}
	args := []string{"--data-dir", t.TempDir(), "--catalog-uri", dsn, "--warehouse", wh, "--coordination", "catalog",
		"--compact-min-files", "4", "--orphans=false"}
	var stdout, stderr strings.Builder
	err = runMaintain(ctx, args, &stdout, &stderr)
	close(proceed)
	if err != nil {
		t.Fatalf("maintain: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if err := <-done; err != nil {
		t.Fatalf("the instance's pass: %v", err)
	}
	if !strings.Contains(stdout.String(), "skipped 1 tables that a serving instance is maintaining") {
		t.Errorf("maintain output does not report the skipped table:\n%s", stdout.String())
	}
	if got := inst.MaintenanceTotals(); got.CompactionRuns != 1 || got.Failures != 0 {
		t.Errorf("the instance's pass: %+v, want its compaction committed", got)
	}
	if location("users") == usersBefore {
		t.Errorf("users was not compacted by the instance")
	}
	if location("orders") == ordersBefore {
		t.Errorf("maintain did not maintain orders (not locked)")
	}

	// --coordination without a PostgreSQL catalog is refused.
	err = runMaintain(ctx, []string{"--data-dir", t.TempDir(), "--coordination", "catalog"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--coordination=catalog needs --catalog sql and a postgres://") {
		t.Errorf("maintain --coordination on the embedded catalog: %v", err)
	}
}
