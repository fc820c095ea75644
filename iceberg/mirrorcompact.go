package iceberg

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
)

// Mirror compaction rewrites every data file an equality delete applies to,
// with the deletes applied, and drops the delete files no surviving data
// file can see any more. Equality deletes of an unpartitioned table apply
// to every older data file, so a compaction rewrites all of the mirror's
// data files but the newest commit's: the mirror holds one row per live
// key, so its size is the source table's, not the change volume's.

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

// maybeCompactMirror compacts a mirror table once its delete files reach
// Config.MirrorCompactDeleteFiles. It runs right after the mirror commit,
// so the number of delete files stays below the threshold plus one
// commit's. A failure is logged, not returned: the commit stands.
func (s *Sink) maybeCompactMirror(ctx context.Context, name string) {
	if s.cfg.MirrorCompactDeleteFiles < 0 {
		return
	}
	if err := s.compactMirror(ctx, name, s.cfg.MirrorCompactDeleteFiles); err != nil && ctx.Err() == nil {
		s.log.Warn("mirror compaction failed; the table stays as it was", "table", name, "err", err)
	}
}

// compactMirror compacts the mirror table when it has at least minDeletes
// delete files. It holds the commit lock from plan to commit: the rewrite
// must see every equality delete it drops.
func (s *Sink) compactMirror(ctx context.Context, name string, minDeletes int) error {
	if err := s.lockCommits(ctx); err != nil {
		return err
	}
	defer s.unlockCommits()
	tbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		return err
	}
	before := mirrorDeleteFiles(tbl)
	if before < minDeletes || before == 0 {
		return nil
	}
	target := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, s.cfg.TargetFileSizeBytes)
	cfg := compaction.DefaultConfig()
	cfg.TargetFileSizeBytes = target
	cfg.MinFileSizeBytes = target * 3 / 4
	cfg.MaxFileSizeBytes = target * 9 / 5
	cfg.MinInputFiles = 1
	cfg.DeleteFileThreshold = 1
	plan, err := compaction.Analyze(ctx, tbl, cfg)
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if len(plan.Groups) == 0 {
		return nil
	}
	groups := make([]table.CompactionTaskGroup, 0, len(plan.Groups))
	rewritten := make(map[string]struct{})
	for _, g := range plan.Groups {
		groups = append(groups, table.CompactionTaskGroup{PartitionKey: g.PartitionKey, Tasks: g.Tasks, TotalSizeBytes: g.TotalSizeBytes})
		for _, t := range g.Tasks {
			rewritten[t.File.FilePath()] = struct{}{}
		}
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return err
	}
	dead, err := compaction.CollectDeadEqualityDeletesWithSpecs(ctx, fs, tbl.Metadata(), tbl.CurrentSnapshot(), rewritten)
	if err != nil {
		return fmt.Errorf("collect dead equality deletes: %w", err)
	}
	txn := tbl.NewTransaction()
	res, err := txn.RewriteDataFiles(ctx, groups, table.RewriteDataFilesOptions{
		ExtraDeleteFilesToRemove: dead,
		SnapshotProps:            iceberg.Properties{"lakehouse.maintenance": "mirror-compaction"},
	})
	if err != nil {
		return fmt.Errorf("rewrite: %w", err)
	}
	if hook := s.cfg.BeforeRewriteCommit; hook != nil {
		if err := hook(name); err != nil {
			return fmt.Errorf("before rewrite commit hook: %w", err)
		}
	}
	after, err := txn.Commit(ctx)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	removed := res.RemovedEqualityDeleteFiles + res.RemovedPositionDeleteFiles
	s.countMirror(func(t *MirrorTotals) { t.Compactions++; t.DeleteFilesRemoved += int64(removed) })
	s.log.Debug("iceberg mirror compacted", "table", name, "data_files_removed", res.RemovedDataFiles,
		"data_files_added", res.AddedDataFiles, "delete_files_before", before, "delete_files_after", mirrorDeleteFiles(after))
	return nil
}

// maintainMirror runs the maintenance of a CDC table's mirror: snapshot
// expiry, compaction of any delete files left, and orphan cleanup when due.
func (s *Sink) maintainMirror(ctx context.Context, name string, orphansDue bool) []error {
	load := func() (*table.Table, error) { return s.LoadMirrorTable(ctx, name) }
	if _, err := load(); err != nil {
		if errors.Is(err, catalog.ErrNoSuchTable) {
			return nil
		}
		return []error{fmt.Errorf("mirror: %w", err)}
	}
	var errs []error
	if _, err := s.expireSnapshotsOf(ctx, load); err != nil {
		errs = append(errs, fmt.Errorf("mirror: expire snapshots: %w", err))
	}
	if !s.cfg.Maintenance.CompactDisabled && s.cfg.MirrorCompactDeleteFiles >= 0 {
		if err := s.compactMirror(ctx, name, 1); err != nil {
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
