package iceberg

import "github.com/prometheus/client_golang/prometheus"

// maintCollector exposes table health and maintenance counters, read at
// scrape time from the sink's own state (one source of truth for /metrics
// and GetStatus). The table label is the sanitised table name: one series
// per CDC table, never per source.
type maintCollector struct {
	s *Sink

	snapshots, dataFiles, manifests, metaBytes *prometheus.Desc

	runs, failures, expiryRuns, expired, compactRuns, filesRewritten, bytesRewritten, rowsRewritten, filesWritten, compactSeconds, compactOffHeap, bytesStaged, orphanRuns, orphans, skipped *prometheus.Desc

	mirrorCommits, mirrorRows, mirrorDeletes, mirrorStale, mirrorExtra, mirrorSchema, mirrorCompactions, mirrorChecks, mirrorDelRemoved *prometheus.Desc

	catalogAttempts, catalogConflicts, catalogErrors, catalogLoads *prometheus.Desc
	committerCommits, committerParts, committerFenced              *prometheus.Desc
}

// Collector returns a Prometheus collector of the sink's table health and
// maintenance metrics (lakehouse_table_*, lakehouse_maintenance_*,
// lakehouse_compaction_*, lakehouse_expiry_*, lakehouse_orphan_*).
func (s *Sink) Collector() prometheus.Collector {
	table := []string{"table"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &maintCollector{
		s:              s,
		snapshots:      d("lakehouse_table_snapshots", "Snapshots kept in the table's metadata, as of its last maintenance pass.", table),
		dataFiles:      d("lakehouse_table_data_files", "Data files of the table's current snapshot, as of its last maintenance pass.", table),
		manifests:      d("lakehouse_table_manifests", "Manifests of the table's current snapshot, as of its last maintenance pass.", table),
		metaBytes:      d("lakehouse_table_metadata_bytes", "Bytes of the table's current metadata file, manifest list and manifests, as of its last maintenance pass.", table),
		runs:           d("lakehouse_maintenance_runs_total", "Table maintenance passes.", nil),
		failures:       d("lakehouse_maintenance_failures_total", "Table maintenance passes that failed (the table is left as it was).", nil),
		expiryRuns:     d("lakehouse_expiry_runs_total", "Snapshot expiry commits.", nil),
		expired:        d("lakehouse_expiry_snapshots_total", "Snapshots expired.", nil),
		compactRuns:    d("lakehouse_compaction_runs_total", "Compaction commits.", nil),
		filesRewritten: d("lakehouse_compaction_files_rewritten_total", "Data files replaced by compaction.", nil),
		bytesRewritten: d("lakehouse_compaction_bytes_rewritten_total", "Bytes of the data files replaced by compaction.", nil),
		rowsRewritten:  d("lakehouse_compaction_rows_rewritten_total", "Rows of the data files replaced by compaction; divided by lakehouse_flushed_entries_total, the times each row was rewritten.", nil),
		filesWritten:   d("lakehouse_compaction_files_written_total", "Data files written by compaction.", nil),
		compactSeconds: d("lakehouse_compaction_seconds_total", "Time spent compacting data files (planning, merging, committing).", nil),
		compactOffHeap: d("lakehouse_compaction_offheap_bytes", "Bytes the compaction merges running now hold outside the Go heap (their Arrow buffers): they count in the process's RSS, and the Go runtime's soft memory limit is lowered by as much (serve --memory-limit).", nil),
		bytesStaged:    d("lakehouse_data_bytes_staged_total", "Bytes of the data files ingest wrote (staged for a commit); lakehouse_compaction_bytes_rewritten_total divided by it is compaction's write amplification.", nil),
		orphanRuns:     d("lakehouse_orphan_runs_total", "Orphan cleanup passes.", nil),
		orphans:        d("lakehouse_orphan_files_removed_total", "Unreferenced files removed by orphan cleanup.", nil),
		skipped:        d("lakehouse_maintenance_skipped_total", "Table maintenance passes skipped because another instance was maintaining the table (multi-instance mode).", nil),

		mirrorCommits:     d("lakehouse_mirror_commits_total", "Mirror table snapshots committed.", nil),
		mirrorRows:        d("lakehouse_mirror_rows_written_total", "Rows written to mirror tables (winning inserts and updates).", nil),
		mirrorDeletes:     d("lakehouse_mirror_keys_deleted_total", "Keys removed from mirror tables by a winning delete.", nil),
		mirrorStale:       d("lakehouse_mirror_stale_changes_total", "Changes older than the row a mirror table held, not applied.", nil),
		mirrorExtra:       d("lakehouse_mirror_extra_rows_total", "Mirror rows with a value that did not fit its typed column, kept whole as JSON in _extra.", nil),
		mirrorSchema:      d("lakehouse_mirror_schema_updates_total", "Mirror table schema evolutions (columns added or widened).", nil),
		mirrorCompactions: d("lakehouse_mirror_compactions_total", "Mirror table compactions committed.", nil),
		mirrorChecks:      d("lakehouse_mirror_compaction_checks_total", "Mirror tables the background compaction measured for due partitions (after mirror commits that may have made one due).", nil),
		mirrorDelRemoved:  d("lakehouse_mirror_delete_files_removed_total", "Delete files dropped by mirror compaction.", nil),

		catalogAttempts:  d("lakehouse_catalog_commit_attempts_total", "Table commits sent to the SQL catalog, retries included.", nil),
		catalogConflicts: d("lakehouse_catalog_commit_conflicts_total", "SQL catalog commits refused because another writer had moved the table (then replayed; a mirror commit over another writer's snapshot is decided again instead).", nil),
		catalogErrors:    d("lakehouse_catalog_commit_errors_total", "SQL catalog commits that failed for another reason than a conflict.", nil),
		catalogLoads:     d("lakehouse_catalog_table_loads_total", "Table loads from the SQL catalog by the sink, each a read and a parse of the table's metadata file (iceberg-go's own load inside each commit attempt is not counted).", nil),
		committerCommits: d("lakehouse_committer_commits_total", "Snapshots committed by this instance as a table's elected committer (multi-instance mode).", nil),
		committerParts:   d("lakehouse_committer_parts_committed_total", "Published parts (one instance's staged files for one table) this instance committed as elected committer.", nil),
		committerFenced:  d("lakehouse_committer_parts_fenced_total", "Published parts this instance's elected committer left out because their sources' leases moved.", nil),
	}
}

func (c *maintCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.snapshots, c.dataFiles, c.manifests, c.metaBytes, c.runs, c.failures,
		c.expiryRuns, c.expired, c.compactRuns, c.filesRewritten, c.bytesRewritten, c.rowsRewritten, c.filesWritten, c.compactSeconds, c.compactOffHeap, c.bytesStaged, c.orphanRuns, c.orphans, c.skipped,
		c.mirrorCommits, c.mirrorRows, c.mirrorDeletes, c.mirrorStale, c.mirrorExtra, c.mirrorSchema, c.mirrorCompactions, c.mirrorChecks, c.mirrorDelRemoved,
		c.catalogAttempts, c.catalogConflicts, c.catalogErrors, c.catalogLoads, c.committerCommits, c.committerParts, c.committerFenced} {
		ch <- d
	}
	c.s.committer.waitSeconds.Describe(ch)
	c.s.commitLocks.ingestWait.Describe(ch)
	describeMirrorIndex(ch)
}

func (c *maintCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.s.Health() {
		ch <- prometheus.MustNewConstMetric(c.snapshots, prometheus.GaugeValue, float64(h.Snapshots), h.Name)
		ch <- prometheus.MustNewConstMetric(c.dataFiles, prometheus.GaugeValue, float64(h.DataFiles), h.Name)
		ch <- prometheus.MustNewConstMetric(c.manifests, prometheus.GaugeValue, float64(h.Manifests), h.Name)
		ch <- prometheus.MustNewConstMetric(c.metaBytes, prometheus.GaugeValue, float64(h.MetadataBytes), h.Name)
	}
	t := c.s.MaintenanceTotals()
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(c.runs, t.Runs)
	counter(c.failures, t.Failures)
	counter(c.expiryRuns, t.ExpiryRuns)
	counter(c.expired, t.SnapshotsExpired)
	counter(c.compactRuns, t.CompactionRuns)
	counter(c.filesRewritten, t.FilesRewritten)
	counter(c.bytesRewritten, t.BytesRewritten)
	counter(c.rowsRewritten, t.RowsRewritten)
	counter(c.filesWritten, t.FilesWrittenCompaction)
	ch <- prometheus.MustNewConstMetric(c.compactSeconds, prometheus.CounterValue, t.CompactionSeconds)
	ch <- prometheus.MustNewConstMetric(c.compactOffHeap, prometheus.GaugeValue, float64(t.MergeOffHeapBytes))
	counter(c.bytesStaged, t.BytesStaged)
	counter(c.orphanRuns, t.OrphanRuns)
	counter(c.orphans, t.OrphansRemoved)
	counter(c.skipped, t.SkippedElsewhere)
	m := c.s.MirrorTotals()
	counter(c.mirrorCommits, m.Commits)
	counter(c.mirrorRows, m.RowsWritten)
	counter(c.mirrorDeletes, m.KeysDeleted)
	counter(c.mirrorStale, m.StaleChanges)
	counter(c.mirrorExtra, m.ExtraRows)
	counter(c.mirrorSchema, m.SchemaUpdates)
	counter(c.mirrorCompactions, m.Compactions)
	counter(c.mirrorChecks, m.CompactionChecks)
	counter(c.mirrorDelRemoved, m.DeleteFilesRemoved)
	ct := c.s.CatalogTotals()
	counter(c.catalogAttempts, ct.Attempts)
	counter(c.catalogConflicts, ct.Conflicts)
	counter(c.catalogErrors, ct.Errors)
	counter(c.catalogLoads, ct.Loads)
	if c.s.cfg.ElectedCommitter {
		ct := c.s.CommitterTotals()
		counter(c.committerCommits, ct.Commits)
		counter(c.committerParts, ct.PartsCommitted)
		counter(c.committerFenced, ct.PartsFenced)
		c.s.committer.waitSeconds.Collect(ch)
	}
	c.s.commitLocks.ingestWait.Collect(ch)
	collectMirrorIndex(ch, m)
}
