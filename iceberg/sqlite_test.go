package iceberg

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestSQLiteConcurrentCatalogWrites: creating tables while other tables
// commit, in one process, must never fail with "database is locked (517)"
// (SQLITE_BUSY_SNAPSHOT, which busy_timeout does not cover).
func TestSQLiteConcurrentCatalogWrites(t *testing.T) {
	ctx := context.Background()
	s := openTestSink(t, t.TempDir(), nil)
	mustCommit(t, s, w1Flush(1, oneSource, 1, 1, 8))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				name := fmt.Sprintf("extra_%d_%d", g, i)
				if _, err := s.loadOrCreate(ctx, name, name); err != nil {
					errs <- fmt.Errorf("create %s: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 2; i < 12; i++ {
			if _, err := s.Commit(ctx, w1Flush(uint64(i), oneSource, uint64(i), 1, 8)); err != nil {
				errs <- fmt.Errorf("commit %d: %w", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
