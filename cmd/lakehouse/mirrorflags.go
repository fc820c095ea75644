package main

import (
	"flag"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// mirrorFlags are the mirror table flags (docs/mirror.md), shared by serve
// (which writes mirrors) and maintain (which maintains them).
type mirrorFlags struct {
	on           bool
	namespace    string
	nestedAsJSON bool
	compactAt    int
	scanBudget   int64
	buckets      int
}

// register adds the flags; writer adds those only a writer uses.
func (m *mirrorFlags) register(fs *flag.FlagSet, writer bool) {
	// On by default: a mirror commit only adds files; compaction runs in
	// the background, per partition (docs/mirror.md).
	fs.BoolVar(&m.on, "mirror", true, "keep a mirror table per CDC table: its current state, one row per row_id with typed columns (see docs/mirror.md)")
	fs.StringVar(&m.namespace, "mirror-namespace", "", "Iceberg namespace of the mirror tables (default: the CDC namespace + \""+iceberg.DefaultMirrorNamespaceSuffix+"\")")
	fs.IntVar(&m.compactAt, "mirror-compact-delete-files", iceberg.DefaultMirrorCompactDeleteFiles, "compact a mirror table partition in the background once it has this many equality delete files (at least 2; negative: no mirror compaction)")
	fs.Int64Var(&m.scanBudget, "mirror-scan-budget", iceberg.DefaultMirrorScanBudget, "also compact a mirror partition once a scan of it would apply more than this many delete rows (each delete file's rows counted once per data file it applies to; negative: off)")
	if writer {
		fs.BoolVar(&m.nestedAsJSON, "mirror-nested-as-json", false, "store nested JSON objects and arrays of mirror rows as JSON text columns instead of inferring struct and list columns")
		fs.IntVar(&m.buckets, "mirror-partition-buckets", iceberg.DefaultMirrorPartitionBuckets, "partition new mirror tables by bucket[N](row_id), so that deletes and compaction work per partition (negative: unpartitioned; existing mirrors keep theirs)")
	}
}

func (m *mirrorFlags) apply(cfg *iceberg.Config) {
	cfg.Mirror = m.on
	cfg.MirrorNamespace = m.namespace
	cfg.MirrorNestedAsJSON = m.nestedAsJSON
	cfg.MirrorCompactDeleteFiles = m.compactAt
	cfg.MirrorScanBudget = m.scanBudget
	cfg.MirrorPartitionBuckets = m.buckets
}
