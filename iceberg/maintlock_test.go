package iceberg

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/pgtest"
)

// TestExclusiveMaintenance: two sinks (two instances) on one PostgreSQL
// catalog with ExclusiveMaintenance. While one is in the middle of a
// table's pass (held inside its compaction, before the commit), the other
// skips that table and changes nothing; once the first is done, the other
// maintains the table again. Without the lock the second sink compacts the
// same files concurrently.
func TestExclusiveMaintenance(t *testing.T) {
	dsn := pgtest.FreshDB(t, os.Getenv(pgtest.EnvDSN))
	ctx := context.Background()
	wh := "file://" + t.TempDir() + "/warehouse"
	entered, proceed := make(chan struct{}), make(chan struct{})
	mod := func(hook func(string) error) func(*Config) {
		return func(c *Config) {
			c.CatalogURI = dsn
			c.Warehouse = wh
			c.ExclusiveMaintenance = true
			c.Maintenance.CompactMinFiles = 4
			c.Maintenance.OrphanDisabled = true
			c.BeforeRewriteCommit = hook
		}
	}
	a := openTestSink(t, t.TempDir(), mod(func(table string) error {
		if table == "users" {
			entered <- struct{}{}
			<-proceed
		}
		return nil
	}))
	b := openTestSink(t, t.TempDir(), mod(nil))
	for i := 1; i <= 6; i++ {
		mustCommit(t, a, w1Flush(uint64(i), testSources, uint64(i), 1, 8))
	}
	before := liveFiles(t, a, "users")

	done := make(chan error, 1)
	go func() { done <- a.MaintainTable(ctx, "users", MaintainOptions{}) }()
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("a's compaction never reached its commit")
	}
	if err := b.MaintainTable(ctx, "users", MaintainOptions{}); err != nil {
		t.Fatalf("b's pass while a maintains: %v", err)
	}
	tb := b.MaintenanceTotals()
	if tb.SkippedElsewhere != 1 || tb.CompactionRuns != 0 || tb.Runs != 0 {
		t.Errorf("b while a maintains the table: %+v, want one skip and no run", tb)
	}
	if got := liveFiles(t, b, "users"); len(got) != len(before) {
		t.Errorf("b changed the table while a held it: %d files, were %d", len(got), len(before))
	}
	// Another table is not locked by a's pass.
	if err := b.MaintainTable(ctx, "orders", MaintainOptions{}); err != nil {
		t.Fatal(err)
	}
	if tb := b.MaintenanceTotals(); tb.SkippedElsewhere != 1 || tb.Runs != 1 {
		t.Errorf("b on another table: %+v", tb)
	}
	close(proceed)
	if err := <-done; err != nil {
		t.Fatalf("a's pass: %v", err)
	}
	if ta := a.MaintenanceTotals(); ta.CompactionRuns != 1 {
		t.Errorf("a: %+v, want one compaction", ta)
	}
	// a released the lock: b maintains the table now.
	if err := b.MaintainTable(ctx, "users", MaintainOptions{}); err != nil {
		t.Fatal(err)
	}
	if tb := b.MaintenanceTotals(); tb.SkippedElsewhere != 1 || tb.Runs != 2 {
		t.Errorf("b after a's pass: %+v", tb)
	}
}

// TestExclusiveMaintenanceNeedsPostgres: the option is refused with
// another catalog.
func TestExclusiveMaintenanceNeedsPostgres(t *testing.T) {
	_, err := Open(context.Background(), Config{DataDir: t.TempDir(), ExclusiveMaintenance: true, Logger: quietLogger()})
	if err == nil {
		t.Fatal("ExclusiveMaintenance with SQLite: no error")
	}
}
