package bench

import (
	"fmt"
	"sync"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// Workloads a run can send (Config.Workload).
const (
	// WorkloadW1 is workload W1 of DESIGN.md, each source sending its own
	// copy.
	WorkloadW1 = "w1"
	// WorkloadKeyed is the keyed CDC workload (workload.Keyed): inserts,
	// updates and deletes over a key space shared by the sources.
	WorkloadKeyed = "keyed"
)

// keyedSeed makes keyed runs repeat the same changes.
const keyedSeed = 1

func (c *Config) normalizeWorkload() error {
	switch c.Workload {
	case "":
		c.Workload = WorkloadW1
	case WorkloadW1, WorkloadKeyed:
	default:
		return fmt.Errorf("bench: workload %q: want %q or %q", c.Workload, WorkloadW1, WorkloadKeyed)
	}
	if c.Keys < 0 {
		return fmt.Errorf("bench: keys %d must not be negative", c.Keys)
	}
	return nil
}

// batchMaker returns the function that makes batch k (from 0) of source
// src (0 <= src < Sources); each source asks for its batches in order, and
// different sources may ask concurrently. Entry sequences of a source run
// 1, 2, 3... across its batches.
func (c *Config) batchMaker() (func(src int, k int64) []codec.Entry, error) {
	if c.Workload != WorkloadKeyed {
		return func(_ int, k int64) []codec.Entry { return w1Batches(c.BatchSize, c.TablePrefix)(int(k)) }, nil
	}
	gen, err := workload.NewKeyed(workload.KeyedConfig{Seed: keyedSeed, Keys: c.Keys, Sources: c.Sources,
		BatchSize: c.BatchSize, TablePrefix: c.TablePrefix, NoModel: true})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var mu sync.Mutex
	return func(src int, _ int64) []codec.Entry {
		mu.Lock()
		defer mu.Unlock()
		return gen.NextFor(src).Entries
	}, nil
}

// w1Batches returns the maker of W1 batch k of batchSize entries.
func w1Batches(batchSize int, tablePrefix string) func(k int) []codec.Entry {
	return func(k int) []codec.Entry {
		es := workload.Entries(int64(k)*int64(batchSize), int64(batchSize))
		workload.PrefixTables(es, tablePrefix)
		return es
	}
}
