package iceberg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// Commit implements sink.Sink: it stages f and commits it at once, one
// snapshot per table. A server with a commit cadence calls Stage and
// CommitStaged instead.
func (s *Sink) Commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	s.mu.Lock()
	st, err := s.stageLocked(ctx, f)
	if err != nil {
		s.mu.Unlock()
		return sink.Result{}, err
	}
	if s.cfg.ElectedCommitter {
		return s.commitViaCommitter(ctx, []*staged{st}, f.Reason == sink.ReasonManual) // unlocks s.mu
	}
	defer s.mu.Unlock()
	return s.commitStagedLocked(ctx, []*staged{st}, sink.CommitInfo{ID: f.ID, Reason: f.Reason})
}

// CommitStaged implements sink.Stager: for each table, one transaction adds
// the staged data files of every given flush and raises the watermarks of
// the sources that wrote rows to it, then (with mirrors) the table's mirror
// commit follows. A staged part whose rows the table's watermarks already
// cover was committed before (a commit whose reply was lost, then retried)
// and is left out. Tables commit in parallel (Config.CommitParallelism,
// commitparallel.go); every table is tried, the ones that committed stay
// committed when others fail, and the error names each failing table.
func (s *Sink) CommitStaged(ctx context.Context, in []sink.Staged, c sink.CommitInfo) (sink.Result, error) {
	sts := make([]*staged, 0, len(in))
	for _, x := range in {
		st, ok := x.(*staged)
		if !ok {
			return sink.Result{}, fmt.Errorf("iceberg: CommitStaged: %T was not staged by this sink", x)
		}
		sts = append(sts, st)
	}
	s.mu.Lock()
	if s.cfg.ElectedCommitter {
		return s.commitViaCommitter(ctx, sts, c.Reason == sink.ReasonManual) // unlocks s.mu
	}
	defer s.mu.Unlock()
	// Flushes staged from now on form new mirror groups, whatever this
	// call's outcome: a retry gives the flushes given here again (new ones
	// beside them), and after a fenced commit a server stages their batches
	// again as new flushes.
	s.mirrorGroups = nil
	if err := checkGroupsWhole(sts); err != nil {
		return sink.Result{}, err
	}
	return s.commitStagedLocked(ctx, sts, c)
}

func (s *Sink) commitStagedLocked(ctx context.Context, sts []*staged, c sink.CommitInfo) (sink.Result, error) {
	var res sink.Result
	if s.closed {
		return res, errors.New("iceberg: sink is closed")
	}
	bases := s.takeStageBases()
	byTable := make(map[string][]*stagedTable)
	for _, st := range sts {
		res.RowsSkipped += st.skipped
		for _, t := range st.tables {
			byTable[t.name] = append(byTable[t.name], t)
		}
	}
	s.passes.start()
	names, outcomes := s.commitTables(ctx, byTable, bases, c)
	s.passes.end()
	var errs []error
	for i, o := range outcomes {
		res.RowsSkipped += o.changelog.skipped
		if o.err != nil {
			errs = append(errs, o.err)
		}
		if tr := o.changelog; o.committed && tr.written > 0 {
			res.RowsWritten += tr.written
			res.BytesWritten += tr.bytes
			res.Paths = append(res.Paths, tr.paths...)
			res.Tables++
			res.Commits = append(res.Commits, sink.TableCommit{Table: sink.SanitizeName(names[i]), SnapshotID: tr.snapshotID,
				Rows: tr.written, Duration: tr.duration})
		}
		if mr := o.mirror; mr.snapshotID != 0 {
			res.Commits = append(res.Commits, sink.TableCommit{Table: s.cfg.MirrorNamespace + "." + sink.SanitizeName(names[i]),
				SnapshotID: mr.snapshotID, Rows: mr.written + mr.deleted, Duration: mr.duration})
		}
	}
	if len(errs) == 1 {
		return res, errs[0]
	}
	return res, errors.Join(errs...)
}

type tableResult struct {
	written, skipped, bytes int64
	paths                   []string
	snapshotID              int64
	duration                time.Duration
}

// commitTable commits the staged parts of one table, retrying conflicts
// that iceberg-go's own replay did not resolve: each attempt reloads the
// table, so the watermark check runs against the latest committed state.
// The first attempt starts from base, the table as the stage loaded it,
// if it is still current (commitbase.go).
func (s *Sink) commitTable(ctx context.Context, name string, parts []*stagedTable, c sink.CommitInfo, base *table.Table) (tableResult, error) {
	var lastErr error
	for attempt := 1; attempt <= s.cfg.CommitAttempts; attempt++ {
		tr, err := s.commitTableOnce(ctx, name, parts, c, base)
		base = nil
		if err == nil {
			return tr, nil
		}
		if !errors.Is(err, table.ErrCommitFailed) || ctx.Err() != nil {
			return tr, err
		}
		lastErr = err
		s.log.Warn("iceberg commit conflict, reloading and retrying", "table", name, "commit", c.ID, "attempt", attempt, "err", err)
	}
	return tableResult{}, fmt.Errorf("after %d attempts: %w", s.cfg.CommitAttempts, lastErr)
}

func (s *Sink) commitTableOnce(ctx context.Context, name string, parts []*stagedTable, c sink.CommitInfo, base *table.Table) (tableResult, error) {
	var tr tableResult
	start := time.Now()
	// Maintenance commits take the same lock, so an ingest commit waits for
	// at most one of them and never conflicts with it.
	unlock, err := s.lockTableForIngest(ctx, s.Identifier(name))
	if err != nil {
		return tr, err
	}
	defer unlock()
	tbl, err := s.loadOrCreateFrom(ctx, sink.SanitizeName(name), name, base)
	if err != nil {
		return tr, err
	}
	have, err := watermarksFromProps(tbl.Properties())
	if err != nil {
		return tr, err
	}
	var (
		files []iceberg.DataFile
		marks = make(map[string]sink.Watermark)
	)
	for _, p := range parts {
		done, err := committedBefore(p, have)
		if err != nil {
			return tr, s.fencedOr(ctx, err)
		}
		if done {
			tr.skipped += p.rows
			continue
		}
		files = append(files, p.files...)
		tr.written += p.rows
		tr.bytes += p.bytes
		for src, sp := range p.spans {
			sink.MergeWatermark(marks, src, sink.Watermark{BatchSeq: sp.maxBatch, EntrySeq: sp.maxEntry})
		}
	}
	if len(files) == 0 {
		s.log.Debug("iceberg table already holds the staged rows", "table", name, "commit", c.ID, "skipped", tr.skipped)
		return tr, nil
	}

	props, wmJSON, err := s.watermarkProps(have, marks, s.changelogProps(tbl.Properties()))
	if err != nil {
		return tr, err
	}
	summary := iceberg.Properties{
		SummaryFlushID:    strconv.FormatUint(c.ID, 10),
		SummaryTrigger:    c.Reason,
		SummaryRows:       strconv.FormatInt(tr.written, 10),
		SummarySkipped:    strconv.FormatInt(tr.skipped, 10),
		SummaryWatermarks: string(wmJSON),
	}

	if s.cfg.BeforeTableCommit != nil {
		if err := s.cfg.BeforeTableCommit(name); err != nil {
			return tr, fmt.Errorf("before commit hook: %w", err)
		}
	}
	txn := tbl.NewTransaction()
	// The files are new (unique names): the duplicate check would read every
	// manifest of the table on every commit, a cost that grows with age.
	if err := txn.AddDataFiles(ctx, files, summary, table.WithoutDuplicateCheck()); err != nil {
		return tr, fmt.Errorf("add data files: %w", err)
	}
	if err := verifyStaged(txn, c.ID, tr.written); err != nil {
		return tr, err
	}
	if len(props) > 0 {
		if err := txn.SetProperties(props); err != nil {
			return tr, fmt.Errorf("set properties: %w", err)
		}
	}
	// The transaction is built on tbl: the catalog commits on it (commitsql.go).
	committed, err := txn.Commit(withCommitBase(ctx, tbl))
	if err != nil {
		return tr, fmt.Errorf("catalog commit: %w", err)
	}
	for _, df := range files {
		tr.paths = append(tr.paths, df.FilePath())
	}
	if snap := committed.CurrentSnapshot(); snap != nil {
		tr.snapshotID = snap.SnapshotID
	}
	tr.duration = time.Since(start)
	s.log.Debug("iceberg table committed", "table", committed.Identifier(), "commit", c.ID,
		"rows", tr.written, "skipped", tr.skipped, "files", len(files), "bytes", tr.bytes)
	return tr, nil
}

// watermarkProps merges the table's watermarks (have) into marks, the
// sources' new ones, and returns the table properties a commit sets (props,
// and the watermarks that moved) and the merged watermarks as the snapshot
// summary's JSON.
func (s *Sink) watermarkProps(have, marks map[string]sink.Watermark, props iceberg.Properties) (iceberg.Properties, []byte, error) {
	for src := range marks {
		if old, ok := have[src]; ok {
			sink.MergeWatermark(marks, src, old)
			if marks[src] == old {
				continue
			}
		}
		props[PropWatermarkPrefix+src] = encodeWatermark(marks[src])
	}
	wmJSON, err := json.Marshal(toJSONWatermarks(marks))
	if err != nil {
		return nil, nil, fmt.Errorf("encode watermarks: %w", err)
	}
	return props, wmJSON, nil
}

// committedBefore reports whether the table's watermarks already cover a
// staged part. Each source's rows in a part come from a range of batches
// committed together, so the watermarks cover all of a part or none of it;
// anything in between means another writer committed this source's batches,
// which one writer per source rules out, and is an error rather than a guess.
func committedBefore(p *stagedTable, have map[string]sink.Watermark) (bool, error) {
	covered, fresh := 0, 0
	for src, sp := range p.spans {
		w := have[src]
		switch {
		case w.BatchSeq >= sp.maxBatch:
			covered++
		case w.BatchSeq < sp.minBatch:
			fresh++
		default:
			return false, fmt.Errorf("source %q: the table's watermark (batch %d) falls inside staged batches %d..%d: another writer committed them",
				src, w.BatchSeq, sp.minBatch, sp.maxBatch)
		}
	}
	if covered > 0 && fresh > 0 {
		return false, fmt.Errorf("a staged part is committed for %d of its %d sources: another writer committed some of them", covered, covered+fresh)
	}
	return covered > 0, nil
}

// verifyStaged checks that the transaction's staged snapshot is this
// commit's append with every row.
func verifyStaged(txn *table.Transaction, commitID uint64, rows int64) error {
	st, err := txn.StagedTable()
	if err != nil {
		return fmt.Errorf("staged table: %w", err)
	}
	snap := st.CurrentSnapshot()
	if snap == nil || snap.Summary == nil {
		return fmt.Errorf("%w: no staged snapshot", ErrIncompleteWrite)
	}
	sum := snap.Summary.Properties
	if sum[SummaryFlushID] != strconv.FormatUint(commitID, 10) {
		return fmt.Errorf("%w: staged snapshot is not commit %d's", ErrIncompleteWrite, commitID)
	}
	if got := sum["added-records"]; got != strconv.FormatInt(rows, 10) {
		if got == "" {
			got = "0"
		}
		return fmt.Errorf("%w: %s of %d rows staged", ErrIncompleteWrite, got, rows)
	}
	return nil
}
