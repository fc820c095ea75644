package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// mirrorFlags are the mirror table flags (docs/mirror.md), shared by serve
// (which writes mirrors) and maintain (which maintains them).
type mirrorFlags struct {
	on           bool
	namespace    string
	nestedAsJSON bool
	inferTimes   bool
	schemasFile  string
	exclude      string
	compactAt    int
	tombstoneRet time.Duration
	scanBudget   int64
	buckets      int
}

// KeyMirror turns the mirror tables on or off. On by default (issue 16):
// users expect a table's current state; --mirror=false keeps only the
// changelog and saves the mirror's CPU (docs/mirror.md, "Known limits").
const (
	KeyMirror     = "mirror"
	DefaultMirror = true
)

// register adds the flags; writer adds those only a writer uses.
func (m *mirrorFlags) register(fs *flag.FlagSet, writer bool) {
	fs.BoolVar(&m.on, KeyMirror, DefaultMirror, "keep a mirror table per CDC table: its current state, one row per row_id with typed columns, "+
		"in the namespace --mirror-namespace (see docs/mirror.md); --mirror=false keeps only the changelog tables and saves the mirror's CPU "+
		"(with the iceberg sink; the jsonl sink has no mirrors)")
	fs.StringVar(&m.namespace, "mirror-namespace", "", "Iceberg namespace of the mirror tables (default: the CDC namespace + \""+iceberg.DefaultMirrorNamespaceSuffix+"\")")
	fs.IntVar(&m.compactAt, "mirror-compact-delete-files", iceberg.DefaultMirrorCompactDeleteFiles, "compact a mirror table partition in the background once it has this many equality delete files (at least 2; negative: no mirror compaction)")
	fs.Int64Var(&m.scanBudget, "mirror-scan-budget", iceberg.DefaultMirrorScanBudget, "also compact a mirror partition once a scan of it would apply more than this many delete rows (each delete file's rows counted once per data file it applies to; negative: off)")
	if writer {
		fs.DurationVar(&m.tombstoneRet, "mirror-tombstone-retention", iceberg.DefaultMirrorTombstoneRetention, "how long a mirror table remembers a deleted key, by event time behind the newest one: a change older than a forgotten delete brings the row back (negative: forever)")
		fs.BoolVar(&m.inferTimes, "mirror-infer-timestamps", false, "type a new mirror column timestamptz when its first value is an RFC 3339 string (2024-05-01T12:00:00.123Z, with a zone); later strings that are not timestamps go to _extra")
		fs.StringVar(&m.exclude, "mirror-exclude", "", "comma-separated CDC table names or patterns (log_*, events_?) that get no mirror table: "+
			"tables whose keys are all new (events, logs), whose mirror would repeat their inserts while its key index keeps every key "+
			"in memory for good; an existing mirror of such a table is no longer updated. Give every instance the same list")
		fs.StringVar(&m.schemasFile, "mirror-schemas", "", "YAML file pinning mirror table schemas: per CDC table its key column name and column types (see docs/mirror.md)")
		fs.BoolVar(&m.nestedAsJSON, "mirror-nested-as-json", false, "store nested JSON objects and arrays of mirror rows as JSON text columns instead of inferring struct and list columns")
		fs.IntVar(&m.buckets, "mirror-partition-buckets", iceberg.DefaultMirrorPartitionBuckets, "partition new mirror tables by bucket[N](row_id), so that deletes and compaction work per partition (negative: unpartitioned; existing mirrors keep theirs)")
	}
}

func (m *mirrorFlags) apply(cfg *iceberg.Config) error {
	cfg.Mirror = m.on
	cfg.MirrorNamespace = m.namespace
	cfg.MirrorNestedAsJSON = m.nestedAsJSON
	cfg.MirrorInferTimestamps = m.inferTimes
	cfg.MirrorCompactDeleteFiles = m.compactAt
	cfg.MirrorScanBudget = m.scanBudget
	cfg.MirrorPartitionBuckets = m.buckets
	cfg.MirrorTombstoneRetention = m.tombstoneRet
	cfg.MirrorExclude = splitList(m.exclude)
	if err := iceberg.ValidateMirrorExclude(cfg.MirrorExclude); err != nil {
		return fmt.Errorf("--mirror-exclude: %w", err)
	}
	if m.schemasFile != "" {
		data, err := os.ReadFile(m.schemasFile)
		if err != nil {
			return fmt.Errorf("--mirror-schemas: %w", err)
		}
		if cfg.MirrorSchemas, err = iceberg.ParseMirrorSchemas(data); err != nil {
			return fmt.Errorf("--mirror-schemas %s: %w", m.schemasFile, err)
		}
	}
	return nil
}
