package iceberg

import (
	"fmt"
	"strconv"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Defaults of MaintenanceConfig.
const (
	// DefaultMaintenanceInterval is how often each table is checked.
	DefaultMaintenanceInterval = time.Minute
	// DefaultSnapshotRetention: snapshots older than this are expired...
	DefaultSnapshotRetention = time.Hour
	// DefaultMinSnapshots: ...but at least this many of the newest are kept.
	DefaultMinSnapshots = 10
	// DefaultMaxSnapshots: and never more than this many, whatever their
	// age, so that a short commit interval (1 s) does not grow every
	// commit's metadata with an hour of snapshots.
	DefaultMaxSnapshots = 200
	// DefaultMaxSnapshotBytes: and never more than fit in this many bytes
	// of metadata (snapshotBytes). Each snapshot's summary records the
	// watermarks of the sources of its commit, about 75 bytes each, and a
	// flush reads each table's metadata once (its stage's load; three
	// times before commitbase.go and commitsql.go, on the SQL catalogs)
	// and writes it once: with a thousand sources per commit, 200
	// snapshots made 10 MB of metadata and a table commit took 730 ms (346
	// ms reading it once), 27 ms with eight sources (TestCommitCostWithAge). Below about 200 sources per commit
	// (100 make about 5 KB a snapshot), MaxSnapshots binds first.
	DefaultMaxSnapshotBytes = 2 << 20
	// DefaultMetadataVersions is how many previous metadata files a table
	// keeps (write.metadata.previous-versions-max); older ones are deleted
	// after each commit.
	DefaultMetadataVersions = 10
	// DefaultManifestMergeCount: a commit merges the table's manifests when
	// the snapshot has at least this many
	// (commit.manifest.min-count-to-merge).
	DefaultManifestMergeCount = 16
	// DefaultCompactMinFiles: a partition is compacted once it has this many
	// files of one size tier; it is also the tiers' size ratio (see
	// compactTier). A merge of larger files holds up to
	// max(compactMaxInputs, 2*CompactMinFiles) of them, each with a read
	// buffer per column. With the small tiers merged up to
	// compactMaxSmallInputs at a time, 12 rewrites a third less than 8 at
	// W1's sustained rate (8 gains nothing there, compactplan.go), for
	// merges of up to 24 larger inputs instead of 16.
	DefaultCompactMinFiles = 12
	// DefaultCompactSmallFileBytes: data files below this size are small,
	// all of one tier (tier 0), merged together whatever their sizes. Above
	// it, a tier spans a factor of CompactMinFiles in size; files at 3/4 of
	// the table's target size or above are never rewritten. A row is thus
	// rewritten about log_CompactMinFiles(target / stage file size) times,
	// not once per pass. It is small because tier 0 is the exception: a
	// table's remainder in it is merged again with every CompactMinFiles
	// new files until it outgrows the tier. At 8 MiB a table fed 100
	// entries/s rewrote each byte 26 times, and W1 at full load 3.7 times
	// instead of 3.2 (TestCompactionRewritesBoundedAtEveryRate).
	DefaultCompactSmallFileBytes = 64 << 10
	// DefaultOrphanAge: files under a table's location that no snapshot
	// references are removed once they are this old. It must exceed the
	// longest time a commit can take from writing its first file, including
	// outages the recovery loop rides out, and the time another process may
	// keep staged files.
	DefaultOrphanAge = 24 * time.Hour
	// DefaultOrphanInterval is how often orphan cleanup runs per table. It
	// lists the whole table location, so it runs less often than the rest.
	DefaultOrphanInterval = time.Hour
	// DefaultMaintenanceTimeout bounds each maintenance job of a table
	// (snapshot expiry, compaction, orphan cleanup, measuring): a store or
	// catalog that stalls fails the job after it, rather than hanging the
	// background loop and holding the commit lock for good.
	DefaultMaintenanceTimeout = 5 * time.Minute
)

// MaintenanceConfig configures the online maintenance that keeps a table's
// commit cost independent of its age: manifest merging on commit, snapshot
// expiry, metadata file cleanup, small-file compaction and orphan cleanup.
// Zero fields take the defaults above. The background loop is
// Sink.RunMaintenance; without it, manifest merging and metadata cleanup
// still apply on every commit (they are table properties).
type MaintenanceConfig struct {
	// Interval is how often each table is checked for expiry and
	// compaction.
	Interval time.Duration
	// SnapshotRetention and MinSnapshots: snapshots older than
	// SnapshotRetention are expired, keeping at least the newest
	// MinSnapshots. Files only expired snapshots referenced are deleted.
	// MaxSnapshots caps the snapshots kept, younger ones included, and
	// MaxSnapshotBytes the metadata they take (snapshotBytes).
	SnapshotRetention time.Duration
	MinSnapshots      int
	MaxSnapshots      int
	MaxSnapshotBytes  int64
	// MetadataVersions is the number of previous metadata files kept.
	MetadataVersions int
	// ManifestMergeCount is the manifest count at which a commit merges
	// manifests.
	ManifestMergeCount int
	// CompactMinFiles and CompactSmallFileBytes drive compaction (see
	// DefaultCompactSmallFileBytes). CompactDisabled turns it off.
	CompactMinFiles       int
	CompactSmallFileBytes int64
	CompactDisabled       bool
	// OrphanAge and OrphanInterval drive orphan cleanup (see
	// DefaultOrphanAge). OrphanDisabled turns it off.
	OrphanAge      time.Duration
	OrphanInterval time.Duration
	OrphanDisabled bool
	// Timeout bounds each maintenance job of a table (see
	// DefaultMaintenanceTimeout). An ingest commit waiting for the commit
	// lock a stalled job holds gives up at its own deadline.
	Timeout time.Duration
}

func (m MaintenanceConfig) withDefaults() (MaintenanceConfig, error) {
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setI := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	setD(&m.Interval, DefaultMaintenanceInterval)
	setD(&m.SnapshotRetention, DefaultSnapshotRetention)
	setI(&m.MinSnapshots, DefaultMinSnapshots)
	setI(&m.MaxSnapshots, DefaultMaxSnapshots)
	if m.MaxSnapshotBytes == 0 {
		m.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	setI(&m.MetadataVersions, DefaultMetadataVersions)
	setI(&m.ManifestMergeCount, DefaultManifestMergeCount)
	setI(&m.CompactMinFiles, DefaultCompactMinFiles)
	if m.CompactSmallFileBytes == 0 {
		m.CompactSmallFileBytes = DefaultCompactSmallFileBytes
	}
	setD(&m.OrphanAge, DefaultOrphanAge)
	setD(&m.OrphanInterval, DefaultOrphanInterval)
	setD(&m.Timeout, DefaultMaintenanceTimeout)
	switch {
	case m.Interval < 0:
		return m, fmt.Errorf("iceberg: maintenance interval %v must be positive", m.Interval)
	case m.SnapshotRetention < 0:
		return m, fmt.Errorf("iceberg: snapshot retention %v must be positive", m.SnapshotRetention)
	case m.MinSnapshots < 1:
		return m, fmt.Errorf("iceberg: snapshots to keep (%d) must be at least 1", m.MinSnapshots)
	case m.MaxSnapshotBytes < 0:
		return m, fmt.Errorf("iceberg: snapshot bytes to keep at most (%d) must be positive", m.MaxSnapshotBytes)
	case m.MaxSnapshots < m.MinSnapshots:
		return m, fmt.Errorf("iceberg: snapshots to keep at most (%d) is below the snapshots to keep at least (%d)", m.MaxSnapshots, m.MinSnapshots)
	case m.MetadataVersions < 1:
		return m, fmt.Errorf("iceberg: metadata versions to keep (%d) must be at least 1", m.MetadataVersions)
	case m.ManifestMergeCount < 2:
		return m, fmt.Errorf("iceberg: manifest merge count (%d) must be at least 2", m.ManifestMergeCount)
	case m.CompactMinFiles < 2:
		return m, fmt.Errorf("iceberg: compaction minimum files (%d) must be at least 2", m.CompactMinFiles)
	case m.CompactSmallFileBytes < 1:
		return m, fmt.Errorf("iceberg: compaction small-file size (%d) must be positive", m.CompactSmallFileBytes)
	case m.OrphanAge < time.Second:
		// A younger file may belong to a commit in progress (in practice
		// keep it well above the longest commit, outages included).
		return m, fmt.Errorf("iceberg: orphan age %v is below the 1 s minimum", m.OrphanAge)
	case m.OrphanInterval < 0:
		return m, fmt.Errorf("iceberg: orphan cleanup interval %v must be positive", m.OrphanInterval)
	case m.Timeout < 0:
		return m, fmt.Errorf("iceberg: maintenance timeout %v must be positive", m.Timeout)
	}
	return m, nil
}

// managedProps are the table properties through which iceberg-go itself
// keeps manifests and metadata files bounded on every commit. Properties the
// user set in Config.TableProperties win.
func (s *Sink) managedProps() iceberg.Properties {
	m := s.cfg.Maintenance
	p := iceberg.Properties{
		table.ManifestMergeEnabledKey:             "true",
		table.ManifestMinMergeCountKey:            strconv.Itoa(m.ManifestMergeCount),
		table.MetadataDeleteAfterCommitEnabledKey: "true",
		table.MetadataPreviousVersionsMaxKey:      strconv.Itoa(m.MetadataVersions),
	}
	for k := range p {
		if v, ok := s.cfg.TableProperties[k]; ok {
			p[k] = v
		}
	}
	return p
}

// changelogWriteProps are the changelog tables' Parquet settings: set when
// a table is created, and on a table created before a setting existed with
// its next commit (changelogProps). Unlike managedProps, a value the table
// already holds is left alone: someone who changed it on purpose (ALTER
// TABLE) keeps it. Properties the user set in Config.TableProperties win.
func (s *Sink) changelogWriteProps() iceberg.Properties {
	p := iceberg.Properties{}
	// Columns written without a Parquet dictionary. Row images and row ids
	// are nearly all distinct, and so is entry_seq within a file: the
	// dictionary is built for every page, on every flush and compaction,
	// and then dropped by the cost-based fallback (hashing entry_seq was
	// about 2 of the 3.5% of the CPU that int64 dictionaries took at
	// saturation). source_id and op have few values, but arrow-go hashes
	// every value of a dictionary column, through a slice of its values
	// built per batch: those two columns took 8% of the server's CPU at W1
	// saturation. Files are sorted by source_id, so plain runs of one value
	// cost zstd next to nothing (a staged W1 file kept its size), and
	// min/max statistics prune by source as well as a dictionary. At a
	// constant 60k entries/s the server used 5-8% less CPU per entry.
	for _, col := range []string{"before", "after", "row_id", "entry_seq", "source_id", "op"} {
		p[dictColumnPrefix+col] = "false"
	}
	// Parquet pages of about changelogPageBytes (see there).
	p[table.ParquetPageSizeBytesKey] = strconv.Itoa(changelogPageBytes)
	p[table.ParquetPageRowLimitKey] = strconv.Itoa(changelogPageRows)
	p[table.ParquetRowGroupSizeBytesKey] = strconv.Itoa(changelogRowGroupBytes)
	for k := range p {
		if v, ok := s.cfg.TableProperties[k]; ok {
			p[k] = v
		}
	}
	return p
}

// Changelog tables are written in Parquet pages of about 256 KiB instead of
// iceberg-go's 1 MiB, checked every 256 values instead of every 20,000. A
// reader holds a page of each column it reads, decompressed, beside its
// compressed copy, and a compaction reads up to 16 files at once. With
// iceberg-go's settings a staged file of W1 held each row-image column in
// one page of 2.7 MB, and compacted files in pages of 1 MB: a merge's page
// buffers were up to 124 MB of the live heap, and the garbage collector,
// held under the soft memory limit, ran 17 times a second at saturation.
// With 256-KiB pages it ran 11 times a second, and an entry cost 11-14% fewer
// CPU-seconds. The price is compression: W1's synthetic rows repeat across
// megabytes, and its files grew from 4 to 7 bytes per entry (real row
// images, less repetitive, should lose less: not measured). 1-MiB pages
// checked every 256 values gained nothing: the page size is what counts.
const (
	changelogPageBytes = 256 << 10
	changelogPageRows  = 256
)

// Changelog tables are written in row groups of at most
// changelogRowGroupBytes instead of iceberg-go's (and Iceberg's) 128 MiB.
// Parquet writers, arrow-go's as Java's, hold a row group's compressed pages
// in memory until it is closed, and compaction's final merges write files
// of 96-128 MiB. W1's rows compress to about 7 bytes and reach the row limit
// (write.parquet.row-group-limit, 1,048,576 rows) at 7 MB, but rows of
// less repetitive row images reach the byte limit first: a merge of 500,000
// rows of 600-byte random row images into a file of 123 MB peaked at 440 MB
// of heap with 128-MiB row groups, 150 MB with 32-MiB ones (16 MiB: the
// same). A row group of 32 MiB is still hundreds of thousands of rows.
const changelogRowGroupBytes = 32 << 20

// Staged files are written in pages of at most stagedPageBytes. Compaction
// merges them by the dozen (up to compactMaxSmallInputs at once), and a
// merge holds a decompressed page of every column of every input: with the
// table's 256-KiB pages, 1.9 MB per staged W1 file, 113 MB of a 198-MB
// merge of 60. They are merged within minutes, so the compression they
// lose costs little (W1's warehouse grew by a fifth). At 100,000 W1
// entries/s the server's RSS fell by about 20 MB at the median and 50 MB at
// the peak of each maintenance pass, and a stage allocated 40% less
// (BenchmarkCommitW1), for the same CPU within this machine's noise.
const stagedPageBytes = 64 << 10

// stagedPageCap is the cap on the page size of staged files: none when
// compaction is off, since they are then the table's files for good.
func (s *Sink) stagedPageCap() int64 {
	if s.cfg.Maintenance.CompactDisabled {
		return 0
	}
	return stagedPageBytes
}

// changelogProps returns the properties a commit of a changelog table with
// properties have sets besides its watermarks: the managed properties it
// lacks or holds with another value, and the write settings it lacks.
func (s *Sink) changelogProps(have iceberg.Properties) iceberg.Properties {
	return withAbsentProps(missingProps(have, s.managedProps()), have, s.changelogWriteProps())
}

// withAbsentProps adds to out the properties of write that have lacks.
func withAbsentProps(out, have, write iceberg.Properties) iceberg.Properties {
	for k, v := range write {
		if _, ok := have[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// missingProps returns the properties of want a table lacks or holds with
// another value (a table created before maintenance existed, or a changed
// setting): they are set with the next commit.
func missingProps(have, want iceberg.Properties) iceberg.Properties {
	out := iceberg.Properties{}
	for k, v := range want {
		if have[k] != v {
			out[k] = v
		}
	}
	return out
}
