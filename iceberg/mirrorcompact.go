package iceberg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
)

// Mirror compaction rewrites the data files of one partition that its
// equality deletes apply to, with the deletes applied, and drops the delete
// files no surviving data file can see any more. It runs in the background
// (RunMirrorCompaction, woken by each mirror commit), never inside a commit:
// a commit only adds its files. A mirror is partitioned by bucket[N] of its
// key, so a partition holds 1/N of the table and a compaction rewrites only
// the partitions that are due:
//
//   - at MirrorCompactDeleteFiles delete files in the partition, or
//   - when a scan of the partition would apply more than MirrorScanBudget
//     delete rows: the sum, over the partition's data files, of the rows of
//     the delete files that apply to each (a reader hashes each delete file
//     and probes every row of each data file it applies to, so this grows
//     with delete files × data files, the quadratic term behind the issue's
//     scan times: 23 ms with 1 delete file, 0.35 s with 20, 8.7 s with 100).
//
// Due partitions are rewritten under the commit lock, from plan to commit
// (iceberg-go rejects a rewrite that any concurrent equality delete
// overlaps), in commits of a bounded input size, so an ingest commit waits
// for at most one such rewrite.
// An unpartitioned mirror (created before partitioning, or with
// MirrorPartitionBuckets < 0) is one partition.

// mirrorCompactOptions bound a mirror compaction's memory: it reads one
// file at a time in batches of compactBatchRows, and at most
// compactWriteQueue batches wait for the writer, so it holds a few batches
// whatever the partition's size. With iceberg-go's defaults (batches of
// 131,072 rows, a reader per core, 64 batches for the writer, and pages
// checked every 20,000 rows: see mirrorWriteProps), a rewrite of a 48-MB
// partition held 93 MB of reads and queued batches; 14 MB so (see
// TestMirrorCompactionMemoryBounded).
func mirrorCompactOptions() []table.CompactionGroupOption {
	return []table.CompactionGroupOption{
		table.WithCompactionScanConcurrency(1),
		table.WithCompactionArrowBatchSize(compactBatchRows),
		table.WithCompactionRecordBatchBufferSize(compactWriteQueue),
	}
}

// mirrorDeleteFiles is the number of delete files of a table's current
// snapshot, from its summary.
func mirrorDeleteFiles(tbl *table.Table) int {
	snap := tbl.CurrentSnapshot()
	if snap == nil || snap.Summary == nil {
		return 0
	}
	n, _ := strconv.Atoi(snap.Summary.Properties["total-delete-files"])
	return n
}

// mirrorPartition is what compaction knows of one partition of a mirror.
type mirrorPartition struct {
	key         string // spec id and partition values
	deleteFiles int    // live delete files
	dataFiles   int    // live data files
	scanCost    int64  // delete rows a scan applies (see above)
}

// partitionKey names a file's partition: its spec id and partition values
// in the spec's order.
func partitionKey(meta table.Metadata, df iceberg.DataFile) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(df.SpecID())))
	if spec := meta.PartitionSpecByID(int(df.SpecID())); spec != nil {
		p := df.Partition()
		for _, f := range spec.Fields() {
			fmt.Fprintf(&b, "/%v", p[f.FieldID])
		}
	}
	return b.String()
}

// mirrorPartitions measures every partition of the mirror's current
// snapshot: delete files from the delete manifests, scan cost from a scan
// plan. It also returns the plan.
func mirrorPartitions(ctx context.Context, tbl *table.Table) (map[string]*mirrorPartition, []table.FileScanTask, error) {
	parts := make(map[string]*mirrorPartition)
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return parts, nil, nil
	}
	get := func(key string) *mirrorPartition {
		p := parts[key]
		if p == nil {
			p = &mirrorPartition{key: key}
			parts[key] = p
		}
		return p
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, nil, err
	}
	mans, err := snap.Manifests(fs)
	if err != nil {
		return nil, nil, fmt.Errorf("read manifest list: %w", err)
	}
	for _, m := range mans {
		if m.ManifestContent() != iceberg.ManifestContentDeletes {
			continue
		}
		for e, err := range m.Entries(fs, true) {
			if err != nil {
				return nil, nil, fmt.Errorf("read manifest: %w", err)
			}
			get(partitionKey(tbl.Metadata(), e.DataFile())).deleteFiles++
		}
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("plan files: %w", err)
	}
	for _, t := range tasks {
		p := get(partitionKey(tbl.Metadata(), t.File))
		p.dataFiles++
		for _, d := range t.EqualityDeleteFiles {
			p.scanCost += d.Count()
		}
		for _, d := range t.DeleteFiles {
			p.scanCost += d.Count()
		}
	}
	return parts, tasks, nil
}

// due reports whether a partition needs compacting, with minDeletes as the
// delete-file threshold.
func (s *Sink) mirrorPartitionDue(p *mirrorPartition, minDeletes int) bool {
	if p.deleteFiles == 0 {
		return false
	}
	return p.deleteFiles >= minDeletes || (s.cfg.MirrorScanBudget > 0 && p.scanCost > s.cfg.MirrorScanBudget)
}

// compactMirror compacts each partition of the mirror that is due, with
// minDeletes as the delete-file threshold. Partitions are rewritten in
// commits of at most about the table's target file size of input each, so
// that an ingest commit waits for at most one such rewrite. It returns the
// number of partitions compacted.
//
// No step starts while a commit pass runs (see mirrorCompactor), unless the
// background compaction has been put off too long: it returns
// errCommitPassRunning then, with the partitions compacted so far.
func (s *Sink) compactMirror(ctx context.Context, name string, minDeletes int) (int, error) {
	tried := make(map[string]bool)
	total := 0
	for {
		if s.mirrorCompact.yieldToPass() {
			return total, errCommitPassRunning
		}
		n, more, err := s.compactMirrorStep(ctx, name, minDeletes, tried)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// errCommitPassRunning says that a mirror compaction stopped for a commit
// pass; it is tried again after the pass.
var errCommitPassRunning = errors.New("iceberg: mirror compaction waits for the commit pass")

// compactMirrorStep rewrites the due partitions not tried yet, up to the
// input cap, in one commit under the commit lock (from plan to commit: the
// rewrite must see every equality delete it drops). more reports due
// partitions left for another step.
func (s *Sink) compactMirrorStep(ctx context.Context, name string, minDeletes int, tried map[string]bool) (n int, more bool, err error) {
	unlock, err := s.lockTable(ctx, s.MirrorIdentifier(name))
	if err != nil {
		return 0, false, err
	}
	defer unlock()
	start := time.Now()
	tbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		return 0, false, err
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return 0, false, nil
	}
	parts, all, err := mirrorPartitions(ctx, tbl)
	if err != nil {
		return 0, false, err
	}
	var due []string
	for key, p := range parts {
		if !tried[key] && s.mirrorPartitionDue(p, minDeletes) {
			due = append(due, key)
		}
	}
	if len(due) == 0 {
		h, ok := measureHeadroom(tbl.Metadata(), snap.SnapshotID, parts)
		s.mirrorCompact.measured(name, h, ok)
		return 0, false, nil
	}
	slices.Sort(due)
	byPart := make(map[string][]table.FileScanTask)
	for _, t := range all {
		key := partitionKey(tbl.Metadata(), t.File)
		byPart[key] = append(byPart[key], t)
	}
	target := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, s.cfg.TargetFileSizeBytes)
	cfg := compaction.DefaultConfig()
	cfg.TargetFileSizeBytes = target
	cfg.MinFileSizeBytes = target * 3 / 4
	cfg.MaxFileSizeBytes = target * 9 / 5
	cfg.MinInputFiles = 1
	cfg.DeleteFileThreshold = 1
	var (
		groups    []table.CompactionTaskGroup
		inBytes   int64
		compact   []string
		rewritten = make(map[string]struct{})
	)
	for _, key := range due {
		if inBytes >= target && len(compact) > 0 {
			more = true
			break
		}
		tried[key] = true
		compact = append(compact, key)
		plan, err := cfg.PlanCompaction(byPart[key])
		if err != nil {
			return 0, false, fmt.Errorf("plan: %w", err)
		}
		for _, g := range plan.Groups {
			groups = append(groups, table.CompactionTaskGroup{PartitionKey: g.PartitionKey, Tasks: g.Tasks, TotalSizeBytes: g.TotalSizeBytes})
			inBytes += g.TotalSizeBytes
			for _, t := range g.Tasks {
				rewritten[t.File.FilePath()] = struct{}{}
			}
		}
	}
	if len(rewritten) == 0 {
		// Only delete files that apply to no data file: they are all
		// dead, but iceberg-go collects dead deletes only beside a
		// rewrite. A path no file has stands for "rewrite nothing".
		rewritten[""] = struct{}{}
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return 0, false, err
	}
	dead, err := compaction.CollectDeadEqualityDeletesWithSpecs(ctx, fs, tbl.Metadata(), snap, rewritten)
	if err != nil {
		return 0, false, fmt.Errorf("collect dead equality deletes: %w", err)
	}
	if len(groups) == 0 && len(dead) == 0 {
		return 0, more, nil
	}
	txn := tbl.NewTransaction()
	res, written, err := rewriteMirror(ctx, tbl, txn, groups, dead)
	if err == nil {
		if hook := s.cfg.BeforeRewriteCommit; hook != nil {
			if err = hook(name); err != nil {
				err = fmt.Errorf("before rewrite commit hook: %w", err)
			}
		}
	}
	var after *table.Table
	if err == nil {
		cctx, cancel := rewriteCommitContext(ctx)
		if after, err = txn.Commit(cctx); err != nil {
			err = fmt.Errorf("commit: %w", catalogCommitError(err))
		}
		cancel()
	}
	if err != nil {
		if !errors.Is(err, errCommitUnknown) {
			s.removeFiles(ctx, tbl, written)
		}
		if isRequirementFailure(err) && ctx.Err() == nil {
			// Only a process outside the commit lock changes the mirror
			// between plan and commit: `lakehouse maintain` beside the
			// server on the embedded catalog (no maintenance lock), or
			// another engine. The next pass plans afresh.
			s.log.Info("mirror compaction dropped: the mirror changed since it was planned (another maintainer?)",
				"table", name, "error", err)
			return 0, false, nil
		}
		return 0, false, err
	}
	removed := res.RemovedEqualityDeleteFiles + res.RemovedPositionDeleteFiles
	s.countMirror(func(t *MirrorTotals) { t.Compactions++; t.DeleteFilesRemoved += int64(removed) })
	s.log.Debug("iceberg mirror compacted", "table", name, "partitions", len(compact), "data_files_removed", res.RemovedDataFiles,
		"data_files_added", res.AddedDataFiles, "delete_files_removed", removed, "delete_files_after", mirrorDeleteFiles(after),
		"duration_ms", time.Since(start).Milliseconds())
	return len(compact), more, nil
}

// maintainMirror runs the maintenance of a CDC table's mirror: snapshot
// expiry, compaction of the partitions that are due (with allDeletes,
// every partition with delete files), and orphan cleanup when due.
func (s *Sink) maintainMirror(ctx context.Context, name string, orphansDue, allDeletes bool) []error {
	load := func() (*table.Table, error) { return s.LoadMirrorTable(ctx, name) }
	if _, err := load(); err != nil {
		if mirrorMissing(err) {
			return nil
		}
		return []error{fmt.Errorf("mirror: %w", err)}
	}
	var errs []error
	if _, err := s.expireSnapshotsOf(ctx, s.MirrorIdentifier(name), load); err != nil {
		errs = append(errs, fmt.Errorf("mirror: expire snapshots: %w", err))
	}
	if !s.cfg.Maintenance.CompactDisabled && s.cfg.MirrorCompactDeleteFiles >= 0 {
		minDeletes := s.cfg.MirrorCompactDeleteFiles
		if allDeletes {
			minDeletes = 1
		}
		if _, err := s.compactMirror(ctx, name, minDeletes); err != nil && !errors.Is(err, errCommitPassRunning) {
			errs = append(errs, fmt.Errorf("mirror: compaction: %w", err))
		}
	}
	if orphansDue {
		if _, err := s.removeOrphansOf(ctx, name, load); err != nil {
			errs = append(errs, fmt.Errorf("mirror: orphan cleanup: %w", err))
		}
	}
	return errs
}

// rewriteMirror stages in txn the rewrite of groups (their deletes applied)
// and the removal of the dead delete files. It returns the data files it
// wrote, which the caller removes if the rewrite is not committed:
// iceberg-go's Transaction.RewriteDataFiles stages the same but does not
// say which files it wrote.
func rewriteMirror(ctx context.Context, tbl *table.Table, txn *table.Transaction, groups []table.CompactionTaskGroup, dead []iceberg.DataFile) (*table.RewriteResult, []iceberg.DataFile, error) {
	res := &table.RewriteResult{}
	rw := txn.NewRewrite(iceberg.Properties{SummaryMaintenance: "mirror-compaction"})
	var written []iceberg.DataFile
	removed := make(map[string]bool)
	for _, g := range groups {
		if len(g.Tasks) == 0 {
			continue
		}
		gr, err := table.ExecuteCompactionGroup(ctx, tbl, g, mirrorCompactOptions()...)
		written = append(written, gr.NewDataFiles...)
		if err != nil {
			return nil, written, fmt.Errorf("rewrite: %w", err)
		}
		if len(gr.OldDataFiles) == 0 && len(gr.NewDataFiles) == 0 {
			continue
		}
		rw.ApplyResult(gr)
		res.RewrittenGroups++
		res.AddedDataFiles += len(gr.NewDataFiles)
		res.RemovedDataFiles += len(gr.OldDataFiles)
		res.RemovedPositionDeleteFiles += len(gr.SafePosDeletes)
		for _, df := range slices.Concat(gr.SafePosDeletes, gr.SafeDeletionVectors) {
			removed[df.FilePath()] = true
		}
	}
	// A dead delete file may also be one a group removes: ReplaceFiles
	// refuses a file removed twice.
	for _, df := range dead {
		if removed[df.FilePath()] {
			continue
		}
		removed[df.FilePath()] = true
		rw.DeleteFile(df)
		if df.ContentType() == iceberg.EntryContentEqDeletes {
			res.RemovedEqualityDeleteFiles++
		} else {
			res.RemovedPositionDeleteFiles++
		}
	}
	if len(removed) == 0 && res.RewrittenGroups == 0 {
		return res, written, nil // nothing to commit
	}
	if err := rw.Commit(ctx); err != nil {
		return nil, written, fmt.Errorf("stage rewrite: %w", err)
	}
	return res, written, nil
}
