package iceberg

import (
	"fmt"
	"maps"
	"path"
	"strconv"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Defaults of the mirror settings of Config.
const (
	// DefaultMirrorNamespaceSuffix is appended to the CDC namespace to name
	// the mirror namespace when Config.MirrorNamespace is empty.
	DefaultMirrorNamespaceSuffix = "_current"
	// DefaultMirrorCompactDeleteFiles: a mirror table partition is
	// compacted once it has this many delete files. Scans slow down faster
	// than linearly with the number of equality delete files, so this
	// bounds both the delete files and the read cost.
	DefaultMirrorCompactDeleteFiles = 16
	// DefaultMirrorTombstoneRetention is how long a deleted key's
	// tombstone is kept, by event time relative to the newest one: longer
	// than any clock skew between sources and any replay after a restart.
	DefaultMirrorTombstoneRetention = 24 * time.Hour
	// DefaultMirrorScanBudget: a mirror partition is compacted once a scan
	// of it would apply this many delete rows (see mirrorScanCost): a few
	// hundred ms of scan on the reference machine (docs/mirror.md).
	DefaultMirrorScanBudget = 2_000_000
	// DefaultMirrorPartitionBuckets is N of the bucket[N](row_id)
	// partitioning of new mirror tables: a commit's equality deletes and a
	// compaction's rewrite each cover 1/N of the table.
	DefaultMirrorPartitionBuckets = 16
	// maxMirrorPartitionBuckets bounds N: every commit writes up to N data
	// files and N delete files per mirror table.
	maxMirrorPartitionBuckets = 1024
)

// System columns of a mirror table. Their field ids are assigned when the
// table is created and never change; typed columns get the next ids.
const (
	mirrorColRowID     = "row_id"
	mirrorColSourceID  = "_source_id"
	mirrorColEntrySeq  = "_entry_seq"
	mirrorColEventTime = "_event_time"
	mirrorColOp        = "_op"
	mirrorColExtra     = "_extra"

	mirrorFieldRowID     = 1
	mirrorFieldSourceID  = 2
	mirrorFieldEntrySeq  = 3
	mirrorFieldEventTime = 4
	mirrorFieldOp        = 5
	mirrorFieldExtra     = 6
)

// mirrorSystemCols are the system column names: a JSON key named like one
// of them cannot have a typed column and sends its row to _extra.
var mirrorSystemCols = map[string]bool{
	mirrorColRowID: true, mirrorColSourceID: true, mirrorColEntrySeq: true,
	mirrorColEventTime: true, mirrorColOp: true, mirrorColExtra: true,
}

// PropMirrorOf marks a mirror table: it holds the changelog table's
// identifier ("cdc.users").
const PropMirrorOf = "lakehouse.mirror.of"

func (cfg *Config) mirrorDefaults() error {
	if cfg.MirrorNamespace == "" {
		cfg.MirrorNamespace = cfg.Namespace + DefaultMirrorNamespaceSuffix
	}
	if cfg.MirrorNamespace == cfg.Namespace {
		return fmt.Errorf("iceberg: mirror namespace %q must differ from the CDC namespace", cfg.MirrorNamespace)
	}
	if err := validateMirrorSchemas(cfg.MirrorSchemas); err != nil {
		return fmt.Errorf("iceberg: %w", err)
	}
	if cfg.MirrorTombstoneRetention == 0 {
		cfg.MirrorTombstoneRetention = DefaultMirrorTombstoneRetention
	}
	if cfg.MirrorCompactDeleteFiles == 0 {
		cfg.MirrorCompactDeleteFiles = DefaultMirrorCompactDeleteFiles
	} else if cfg.MirrorCompactDeleteFiles == 1 {
		return fmt.Errorf("iceberg: mirror compaction delete files (%d) must be at least 2, or negative to turn it off", cfg.MirrorCompactDeleteFiles)
	}
	if cfg.MirrorScanBudget == 0 {
		cfg.MirrorScanBudget = DefaultMirrorScanBudget
	}
	if cfg.MirrorPartitionBuckets == 0 {
		cfg.MirrorPartitionBuckets = DefaultMirrorPartitionBuckets
	} else if cfg.MirrorPartitionBuckets > maxMirrorPartitionBuckets {
		return fmt.Errorf("iceberg: mirror partition buckets (%d) must be at most %d, or negative for unpartitioned mirrors", cfg.MirrorPartitionBuckets, maxMirrorPartitionBuckets)
	}
	return nil
}

// MirrorSchema returns the schema a mirror table is created with: the
// system columns only; typed columns are added as rows need them.
func MirrorSchema() *iceberg.Schema {
	str := iceberg.PrimitiveTypes.String
	return iceberg.NewSchemaWithIdentifiers(0, []int{mirrorFieldRowID},
		iceberg.NestedField{ID: mirrorFieldRowID, Name: mirrorColRowID, Type: str, Required: true, Doc: "the row's key (the CDC entry's row id)"},
		iceberg.NestedField{ID: mirrorFieldSourceID, Name: mirrorColSourceID, Type: str, Doc: "the source of the change the row holds"},
		iceberg.NestedField{ID: mirrorFieldEntrySeq, Name: mirrorColEntrySeq, Type: iceberg.PrimitiveTypes.Int64, Doc: "the entry sequence of that change within its source"},
		iceberg.NestedField{ID: mirrorFieldEventTime, Name: mirrorColEventTime, Type: iceberg.PrimitiveTypes.TimestampTz, Doc: "the event time of that change"},
		iceberg.NestedField{ID: mirrorFieldOp, Name: mirrorColOp, Type: str, Doc: "INSERT or UPDATE"},
		iceberg.NestedField{ID: mirrorFieldExtra, Name: mirrorColExtra, Type: str, Doc: "the whole row as JSON text when a value did not fit its typed column; null otherwise"},
	)
}

// mirrorPartitionSpec is the partitioning of a new mirror table:
// bucket[MirrorPartitionBuckets] of the key, or none.
func (s *Sink) mirrorPartitionSpec(keyFieldID int) iceberg.PartitionSpec {
	n := s.cfg.MirrorPartitionBuckets
	if n <= 0 {
		return *iceberg.UnpartitionedSpec
	}
	return iceberg.NewPartitionSpec(iceberg.PartitionField{SourceIDs: []int{keyFieldID}, FieldID: 1000,
		Name: "key_bucket", Transform: iceberg.BucketTransform{NumBuckets: n}})
}

// mirrorTableProps are the properties of a new mirror table.
func (s *Sink) mirrorTableProps(original string) iceberg.Properties {
	props := iceberg.Properties{
		PropOriginalName:                   original,
		PropMirrorOf:                       s.cfg.Namespace + "." + original,
		table.PropertyFormatVersion:        "2",
		table.ParquetCompressionKey:        "zstd",
		table.WriteTargetFileSizeBytesKey:  strconv.FormatInt(s.cfg.TargetFileSizeBytes, 10),
		table.CommitNumRetriesKey:          strconv.Itoa(s.cfg.CommitRetries),
		table.WriteDeleteIsolationLevelKey: string(table.IsolationSnapshot), // one writer per table
		dictColumnPrefix + mirrorColRowID:  "false",
		dictColumnPrefix + mirrorColExtra:  "false",
	}
	maps.Copy(props, mirrorWriteProps())
	maps.Copy(props, s.managedProps())
	return props
}

// mirrorWriteProps are the mirror tables' Parquet page and row group
// settings, those of the changelog tables (changelogPageBytes,
// changelogRowGroupBytes): set when a mirror is created,
// and on an older mirror with its next commit (mirrorProps). With
// iceberg-go's (1 MiB, checked every 20,000 values) a page of row images
// reached 20,000 rows, 16 MB in TestMirrorCompactionMemoryBounded, and a
// reader holds a page per column, compressed and decompressed.
func mirrorWriteProps() iceberg.Properties {
	return iceberg.Properties{
		table.ParquetPageSizeBytesKey:     strconv.Itoa(changelogPageBytes),
		table.ParquetPageRowLimitKey:      strconv.Itoa(changelogPageRows),
		table.ParquetRowGroupSizeBytesKey: strconv.Itoa(changelogRowGroupBytes),
	}
}

// mirrorProps returns the properties a commit of a mirror table with
// properties have sets besides its watermarks: the managed properties it
// lacks or holds with another value, and the write settings it lacks.
func (s *Sink) mirrorProps(have iceberg.Properties) iceberg.Properties {
	return withAbsentProps(missingProps(have, s.managedProps()), have, mirrorWriteProps())
}

// ValidateMirrorExclude checks Config.MirrorExclude: each item a table
// name or a path.Match pattern.
func ValidateMirrorExclude(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); p == "" || err != nil {
			return fmt.Errorf("mirror exclusion %q: not a table name or pattern (path.Match syntax: *, ?, [a-z])", p)
		}
	}
	return nil
}

// mirrorExcluded reports whether the CDC table name gets no mirror table
// (Config.MirrorExclude). A table whose keys are all new (events, logs)
// gains nothing from one: the mirror repeats its inserts, while the
// writer's order index keeps every key in memory for good (about 80 bytes
// plus the key) and each commit interval's staged changes hold every new
// key's change until the commit, outside the server's memory budget.
// Nothing is written to an excluded table's mirror, nor created; one that
// exists stays as it is and is still maintained.
func (s *Sink) mirrorExcluded(name string) bool {
	for _, p := range s.cfg.MirrorExclude {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// mirrored reports whether the rows of CDC table name go to a mirror table.
func (s *Sink) mirrored(name string) bool {
	return s.cfg.Mirror && !s.mirrorExcluded(name)
}
