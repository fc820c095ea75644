package iceberg

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/apache/arrow-go/v18/arrow/compute"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/offheap"
)

// Compaction reads the files of a group as sorted runs (every data file the
// sink writes is sorted by source and entry sequence) and merges them, so the
// output keeps the table's sort order. iceberg-go's own group executor
// concatenates its inputs, which would leave each output file a sequence of
// sorted runs. Memory is bounded by the number of inputs times
// compactBatchRows (and a page per column), whatever the group's size;
// a merge of one partition holds it off the Go heap (mergeGroup).
const (
	compactBatchRows = 1024
	// compactSliceRows is the shortest run of one input that a merge
	// passes on as a slice of the input's batch rather than copying it:
	// below it, the batches handed to the Parquet writer get too small.
	compactSliceRows = 64
	// compactMaxInputs bounds how many files one group merges at once
	// (unless CompactMinFiles is above half of it). Each
	// input holds a decompressed page per column besides its batch: 64
	// inputs held about 430 MB of W1 in readers during a merge, which the
	// garbage collector then doubled (read through iceberg-go's scan, which
	// holds each column chunk whole; see compactread.go).
	compactMaxInputs = 16
	// compactMaxSmallInputs bounds the groups of the two lowest size tiers
	// (compactplan.go): files of less than CompactSmallFileBytes times
	// CompactMinFiles (768 KiB by default). Each input holds a decompressed
	// page per column: a merge of about 60 staged W1 files held 198 MB, 113
	// MB of it pages (1.9 MB per input), and RSS during a maintenance pass
	// rose by about 100 MB over groups of 16. Staged files have smaller
	// pages since (stagedPageBytes).
	compactMaxSmallInputs = 64
	// compactWriteQueue is how many merged batches may wait for the
	// Parquet writer, which runs on a goroutine of its own (iceberg-go's
	// default is 64). The merge outpaces the writer, so the queue stays
	// full, and each batch there is a slice that keeps an input's whole
	// batch alive: with 64, a maintenance pass of W1 peaked at 298-312 MB,
	// with 4 at 281 MB, for the same CPU.
	compactWriteQueue = 4
)

// compactResult reports one compaction of a table.
type compactResult struct {
	groups       int
	filesRemoved int
	filesAdded   int
	bytesBefore  int64
	bytesAfter   int64
	rowsBefore   int64
}

// compactTable plans and runs one compaction of tbl. The groups are
// rewritten without holding the commit lock; the commit takes it and
// applies the rewrite to the latest table state. Should the commit fail
// (another process removed an input meanwhile), the new files are orphans
// for cleanup and nothing is visible.
func (s *Sink) compactTable(ctx context.Context, name string) (compactResult, error) {
	var res compactResult
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		return res, err
	}
	if tbl.CurrentSnapshot() == nil {
		return res, nil
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return res, fmt.Errorf("plan files: %w", err)
	}
	target := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, s.cfg.TargetFileSizeBytes)
	groups := s.planCompaction(tasks, target)
	if len(groups) == 0 {
		return res, nil
	}
	var results []table.CompactionGroupResult
	cleanup := func() {
		for _, gr := range results {
			s.removeFiles(ctx, tbl, gr.NewDataFiles)
		}
	}
	for _, g := range groups {
		gr, err := s.mergeGroup(ctx, tbl, g)
		if err != nil {
			cleanup()
			return res, err
		}
		results = append(results, gr)
	}
	if hook := s.cfg.BeforeRewriteCommit; hook != nil {
		if err := hook(name); err != nil {
			cleanup()
			return res, fmt.Errorf("before rewrite commit hook: %w", err)
		}
	}
	if err := s.commitRewrite(ctx, name, results); err != nil {
		if errors.Is(err, errCommitUnknown) {
			// The new files may be the table's now.
			return res, err
		}
		cleanup()
		if errors.Is(err, errRewriteInputsGone) {
			// Another maintainer (`lakehouse maintain` beside the server,
			// without --coordination) compacted the files first: the
			// table is compacted, and the next pass plans afresh.
			s.log.Info("compaction dropped: another maintainer rewrote its files first", "table", name)
			return res, nil
		}
		return res, err
	}
	for _, gr := range results {
		res.groups++
		res.filesRemoved += len(gr.OldDataFiles)
		res.filesAdded += len(gr.NewDataFiles)
		res.bytesBefore += gr.BytesBefore
		res.bytesAfter += gr.BytesAfter
		for _, df := range gr.OldDataFiles {
			res.rowsBefore += df.Count()
		}
	}
	return res, nil
}

// errRewriteInputsGone: some of a rewrite's old files are no longer in the
// table, because another process compacted (or deleted) them meanwhile.
var errRewriteInputsGone = errors.New("compaction: some of the rewritten files are no longer in the table")

// commitRewrite replaces the groups' old files with their new ones in one
// snapshot on the latest table state, under the commit lock. It returns
// errRewriteInputsGone, committing nothing, when the latest state lacks an
// old file (iceberg-go would refuse with "cannot delete files that do not
// belong to the table").
func (s *Sink) commitRewrite(ctx context.Context, name string, results []table.CompactionGroupResult) error {
	unlock, err := s.lockTable(ctx, s.Identifier(name))
	if err != nil {
		return err
	}
	defer unlock()
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		return err
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return fmt.Errorf("plan files: %w", err)
	}
	live := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		live[t.File.FilePath()] = true
	}
	for _, gr := range results {
		for _, df := range gr.OldDataFiles {
			if !live[df.FilePath()] {
				return errRewriteInputsGone
			}
		}
	}
	txn := tbl.NewTransaction()
	rw := txn.NewRewrite(iceberg.Properties{SummaryMaintenance: "compaction"})
	for _, gr := range results {
		rw.ApplyResult(gr)
	}
	if err := rw.Commit(ctx); err != nil {
		return fmt.Errorf("stage rewrite: %w", err)
	}
	cctx, cancel := rewriteCommitContext(ctx)
	defer cancel()
	if _, err := txn.Commit(withCommitBase(cctx, tbl)); err != nil {
		return fmt.Errorf("commit rewrite: %w", catalogCommitError(err))
	}
	return nil
}

// mergeGroup merges sorted input files into new sorted files near the
// target size and checks that not a row was added or lost.
//
// A merge of one partition's sorted files, the common case, runs with its
// Arrow buffers off the Go heap (internal/offheap): its inputs' pages and
// batches and its output's column buffers, about 55 MB of the 100-135 MB a
// merge of ~40 staged files holds (arrow-go allocates its read buffers and
// page encoders on the heap itself), which on the heap the garbage
// collector doubled in the process's RSS, and collected at its pace rather
// than reused at once. Such a merge reads and writes on this goroutine
// only (compactread.go, parquetwrite.go), so nothing touches its memory
// once it returns; any other merge, which may go through iceberg-go's
// reader or writer and their goroutines, stays on the heap.
func (s *Sink) mergeGroup(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask) (table.CompactionGroupResult, error) {
	gr := table.CompactionGroupResult{}
	seen := make(map[string]bool)
	var wantRows int64
	for _, t := range tasks {
		if t.Start != 0 || len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 {
			return gr, fmt.Errorf("compaction: %s is split or has deletes; changelog tables have neither", t.File.FilePath())
		}
		if seen[t.File.FilePath()] {
			continue
		}
		seen[t.File.FilePath()] = true
		gr.OldDataFiles = append(gr.OldDataFiles, t.File)
		gr.BytesBefore += t.File.FileSizeBytes()
		wantRows += t.File.Count()
	}
	// The collector keeps half its room while the merge runs: what a
	// pass's RSS peak is made of (offheap.Budget.Hold).
	defer s.maint.offHeap.Hold()()
	meta := tbl.Metadata()
	if _, _, one := onePartition(meta, gr.OldDataFiles); one && claimOrder(meta, gr.OldDataFiles) {
		res, err := s.mergeOffHeap(ctx, tbl, tasks, gr, wantRows)
		if !errors.Is(err, errMergeNeedsHeap) {
			return res, err
		}
	}
	return s.mergeInto(ctx, tbl, tasks, gr, wantRows, readDirectOrScan)
}

// errMergeNeedsHeap: an off-heap merge found that it cannot run on its own
// reader and writer (an input or the table's schema differs); it is run
// again on the heap.
var errMergeNeedsHeap = errors.New("compaction: the merge needs iceberg-go's reader or writer")

// mergeOffHeap runs mergeInto with an off-heap allocator, closed when the
// merge is done.
func (s *Sink) mergeOffHeap(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask, gr table.CompactionGroupResult, wantRows int64) (table.CompactionGroupResult, error) {
	mem := offheap.New(s.maint.offHeap)
	defer func() {
		st := mem.Stats()
		// Blocks still out are a Parquet reader's pooled buffers, freed
		// when the collector finalizes the reader, or an error path's.
		out := mem.Close()
		s.log.Debug("compaction merge memory", "table", tbl.Identifier(), "peak_bytes", st.Peak, "outstanding_bytes", out)
		if s.afterOffHeapMerge != nil {
			s.afterOffHeapMerge(st, out)
		}
	}()
	return s.mergeInto(compute.WithAllocator(ctx, mem), tbl, tasks, gr, wantRows, readDirectOnly)
}

// mergeInto merges tasks' files into gr's new files; reads says how the
// merge may read them, and with readDirectOnly it writes them only on its
// own writer.
func (s *Sink) mergeInto(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask, gr table.CompactionGroupResult, wantRows int64, reads mergeReads) (table.CompactionGroupResult, error) {
	m, err := newMerger(ctx, tbl, tasks, reads, newMergePause(ctx, &s.passes))
	if err != nil {
		return gr, err
	}
	defer m.close()
	var gotRows int64
	written, entry, err := s.writeMerge(ctx, tbl, m, gr.OldDataFiles, reads == readDirectOnly)
	if err != nil {
		return gr, err
	}
	for df, err := range written {
		if err == nil {
			df, err = entry(df)
		}
		if err != nil {
			s.removeFiles(ctx, tbl, gr.NewDataFiles)
			return gr, fmt.Errorf("compaction: write: %w", err)
		}
		gr.NewDataFiles = append(gr.NewDataFiles, df)
		gr.BytesAfter += df.FileSizeBytes()
		gotRows += df.Count()
	}
	if m.err != nil || gotRows != wantRows {
		s.removeFiles(ctx, tbl, gr.NewDataFiles)
		return gr, errors.Join(m.err, fmt.Errorf("compaction: %d rows written for %d read: not committed", gotRows, wantRows))
	}
	return gr, nil
}

// writeMerge writes the merge m of inputs into new files, and returns them
// with the function that turns each into its manifest entry. A merge of
// one partition's sorted files, read directly (the common case), is
// written on this goroutine (parquetwrite.go); any other through
// iceberg-go's writer and a write view (mergeView), unless ownWriterOnly:
// then it fails with errMergeNeedsHeap, nothing written.
func (s *Sink) writeMerge(ctx context.Context, tbl *table.Table, m *merger, inputs []iceberg.DataFile, ownWriterOnly bool) (iter.Seq2[iceberg.DataFile, error], func(iceberg.DataFile) (iceberg.DataFile, error), error) {
	meta := tbl.Metadata()
	if dir, partition, one := onePartition(meta, inputs); one && m.direct && claimOrder(meta, inputs) {
		if files, ok, err := s.writeOnePartition(ctx, tbl, dir, m.schema, m.batches(), 0); ok {
			return dataFiles(files, err), viewEntry(meta, true, true, partition), nil
		}
	}
	if ownWriterOnly {
		return nil, nil, errMergeNeedsHeap
	}
	return s.writeMergeThroughIceberg(ctx, tbl, m, inputs)
}

// writeMergeThroughIceberg writes the merge m of inputs with iceberg-go's
// writer, through a write view (mergeView), at most compactWriteQueue
// merged batches waiting for it.
func (s *Sink) writeMergeThroughIceberg(ctx context.Context, tbl *table.Table, m *merger, inputs []iceberg.DataFile) (iter.Seq2[iceberg.DataFile, error], func(iceberg.DataFile) (iceberg.DataFile, error), error) {
	wtbl, entry, err := s.mergeView(tbl, inputs)
	if err != nil {
		return nil, nil, err
	}
	return table.WriteRecords(ctx, wtbl, m.schema, m.batches(), table.WithClusteredWrite(),
		table.WithRecordBatchBufferSize(compactWriteQueue)), entry, nil
}

// removeFiles deletes files written by an abandoned rewrite; what fails here
// is left for orphan cleanup.
func (s *Sink) removeFiles(ctx context.Context, tbl *table.Table, files []iceberg.DataFile) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return
	}
	for _, df := range files {
		if err := fs.Remove(df.FilePath()); err != nil {
			s.log.Debug("could not remove an abandoned compaction file", "path", df.FilePath(), "err", err)
		}
	}
}

// removePaths deletes files of tbl's IO by path, logging failures (orphan
// cleanup removes what is left).
func (s *Sink) removePaths(ctx context.Context, tbl *table.Table, paths ...string) {
	if len(paths) == 0 {
		return
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		s.log.Debug("could not remove files", "err", err)
		return
	}
	for _, p := range paths {
		if err := fs.Remove(p); err != nil {
			s.log.Debug("could not remove a file", "path", p, "err", err)
		}
	}
}
