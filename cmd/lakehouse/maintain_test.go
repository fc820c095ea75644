package main

import (
	"context"
	"os"
	"slices"
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

// TestMaintainCreatesNoNamespace: `lakehouse maintain` (mirrors on, its
// default) on a catalog that holds only changelog tables leaves the
// catalog's namespaces as they were: the mirror namespace is created with
// the first mirror table, not by a sink opened to maintain. It created an
// empty cdc_current before. On the embedded catalog, and on PostgreSQL when
// LAKEHOUSE_TEST_POSTGRES_DSN is set.
func TestMaintainCreatesNoNamespace(t *testing.T) {
	type catalogCase struct {
		name string
		cfg  func(dir string) (iceberg.Config, []string)
	}
	cases := []catalogCase{{"embedded", func(dir string) (iceberg.Config, []string) {
		return iceberg.Config{DataDir: dir}, []string{"--data-dir", dir}
	}}}
	if os.Getenv(pgtest.EnvDSN) != "" {
		cases = append(cases, catalogCase{"postgres", func(dir string) (iceberg.Config, []string) {
			dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
			wh := "file://" + dir + "/warehouse"
			return iceberg.Config{DataDir: dir, CatalogURI: dsn, Warehouse: wh},
				[]string{"--data-dir", t.TempDir(), "--catalog-uri", dsn, "--warehouse", wh}
		}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cfg, args := tc.cfg(t.TempDir())
			namespaces := func() []string {
				t.Helper()
				sk, err := iceberg.Open(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer sk.Close()
				nss, err := sk.Catalog().ListNamespaces(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, ns := range nss {
					out = append(out, strings.Join(ns, "."))
				}
				return out
			}
			sk, err := iceberg.Open(ctx, cfg) // mirrors off
			if err != nil {
				t.Fatal(err)
			}
			commitW1(t, sk, 2)
			if err := sk.Close(); err != nil {
				t.Fatal(err)
			}
			before := namespaces()
			if len(before) != 1 || before[0] != "cdc" {
				t.Fatalf("namespaces before maintain: %v, want [cdc]", before)
			}
			var stdout, stderr strings.Builder
			if err := runMaintain(ctx, append(args, "--orphans=false"), &stdout, &stderr); err != nil {
				t.Fatalf("maintain: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), "maintained") {
				t.Fatalf("maintain output:\n%s", stdout.String())
			}
			if after := namespaces(); !slices.Equal(after, before) {
				t.Errorf("namespaces after maintain: %v, want %v", after, before)
			}
		})
	}
}
