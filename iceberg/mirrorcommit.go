package iceberg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// Snapshot summary keys of mirror commits (beside the changelog's).
const (
	SummaryMirrorRows    = "lakehouse.mirror.rows"
	SummaryMirrorDeletes = "lakehouse.mirror.keys-deleted"
	SummaryMirrorStale   = "lakehouse.mirror.stale"
	SummaryMirrorExtra   = "lakehouse.mirror.extra-rows"
)

// mirrorResult reports one mirror commit.
type mirrorResult struct {
	written, deleted, stale, extra, skipped int64
	snapshotID                              int64
	deleteFiles                             int          // equality delete files added
	growth                                  mirrorGrowth // for the background compaction
	duration                                time.Duration
	// committed: the catalog commit ran (false when the mirror's
	// watermarks covered every part).
	committed bool
}

// commitMirror commits the mirror side of a table's staged parts (see
// mirror.go): in direct mode after the changelog commit of the same table,
// with the elected committer after the changelog commit that committed the
// published parts (committermirror.go). commitCtx, when set, wraps the
// context of the mirror's catalog commit alone (the committer marks its
// parts applied in that transaction).
// The first attempt starts from base, the mirror as the stage loaded it,
// if it is still current (commitbase.go); base may be nil.
func (s *Sink) commitMirror(ctx context.Context, name string, parts []*mirrorPart, c sink.CommitInfo,
	commitCtx func(context.Context) context.Context, base *table.Table) (mirrorResult, error) {
	for attempt := 1; ; attempt++ {
		mr, err := s.commitMirrorOnce(ctx, name, parts, c, commitCtx, base)
		base = nil
		if !errors.Is(err, errMirrorMoved) || attempt >= s.cfg.CommitAttempts || ctx.Err() != nil {
			return mr, err
		}
		// Its index was dropped: the next attempt reloads it from the
		// table and decides again (mirrorbase.go).
		s.log.Info("iceberg mirror commit raced another committer; deciding it again", "table", name, "attempt", attempt, "err", err)
	}
}

// commitMirrorOnce is one attempt of commitMirror.
func (s *Sink) commitMirrorOnce(ctx context.Context, name string, parts []*mirrorPart, c sink.CommitInfo,
	commitCtx func(context.Context) context.Context, base *table.Table) (mirrorResult, error) {
	var mr mirrorResult
	start := time.Now()
	unlock, err := s.lockTableForIngest(ctx, s.MirrorIdentifier(name))
	if err != nil {
		return mr, err
	}
	defer unlock()
	tbl, err := s.loadOrCreateMirror(ctx, name, base)
	if err != nil {
		return mr, err
	}
	have, err := watermarksFromProps(tbl.Properties())
	if err != nil {
		return mr, err
	}
	var live []*mirrorPart
	marks := make(map[string]sink.Watermark)
	for _, p := range parts {
		// A part the watermarks cover in part is applied whole: a change
		// applied again changes nothing (the newest order per key wins,
		// and the index holds every key's, deletes included).
		if mirrorCovered(p.spans, have) {
			mr.skipped += p.rows
			continue
		}
		live = append(live, p)
		for src, sp := range p.spans {
			sink.MergeWatermark(marks, src, sink.Watermark{BatchSeq: sp.maxBatch, EntrySeq: sp.maxEntry})
		}
	}
	if len(marks) == 0 {
		return mr, nil
	}
	s.dropForeignIndex(name, tbl)
	idx, err := s.mirrorIndexFor(ctx, name, tbl)
	if err != nil {
		return mr, err
	}
	winners := mergeMirrorParts(live)
	apply := make([]*mirrorChange, 0, len(winners))
	for _, ch := range winners {
		if cur, ok := idx.get(ch.key); ok && compareOrder(ch.order(), cur) <= 0 {
			mr.stale++
			continue
		}
		apply = append(apply, ch)
	}
	slices.SortFunc(apply, func(a, b *mirrorChange) int { return strings.Compare(a.key, b.key) })
	// The index takes the winners now; unless the commit succeeds it is
	// dropped and reloaded from the table next time.
	committedOK := false
	defer func() {
		if !committedOK {
			s.mirror.dropIndex(sink.SanitizeName(name))
		}
		s.reportIndex(idx, !committedOK)
	}()
	// Decided before the index takes this commit's changes.
	dels := s.mirrorDeleteKeys(idx, apply)
	var rows []*mirrorChange
	var deletes []tombstone
	for _, ch := range apply {
		idx.set(ch.key, ch.order(), ch.op == codec.OpDelete)
		if ch.op == codec.OpDelete {
			mr.deleted++
			deletes = append(deletes, tombstone{key: ch.key, ord: ch.order()})
		} else {
			rows = append(rows, ch)
		}
	}
	mr.written = int64(len(rows))

	// The record is built against the current schema, decoding each
	// `after` once. Only rows that did not fit it can need new or wider
	// columns: the schema plan reads those alone, and only a schema change
	// builds the record again (a table's first commits).
	pin, ty := s.mirrorPin(name), s.mirrorTyping()
	rec, extra, misfits, err := buildMirrorRecord(ctx, tbl.Schema(), rows, ty, pin)
	if err != nil {
		return mr, err
	}
	// The snapshot this commit was decided on.
	var decided int64
	if snap := tbl.CurrentSnapshot(); snap != nil {
		decided = snap.SnapshotID
	}
	if hook := s.afterMirrorDecided; hook != nil {
		hook(name)
	}
	if next, err := s.evolveMirrorSchema(ctx, tbl, pin, misfits); err != nil {
		return mr, err
	} else if next != tbl {
		// The schema commit requires only the schema it changed, so the
		// table it returns can hold another writer's rows committed since
		// the decision: the row delta, built on it, would then commit at
		// the first attempt, its equality deletes removing newer rows the
		// decision never saw. Decided again instead.
		if !onlyCompactedSince(next, decided) {
			return mr, fmt.Errorf("mirror: schema commit: %w (%s, decided on snapshot %d)", errMirrorMoved,
				strings.Join(next.Identifier(), "."), decided)
		}
		tbl = next
		rec.Release()
		if rec, extra, _, err = buildMirrorRecord(ctx, tbl.Schema(), rows, ty, pin); err != nil {
			return mr, err
		}
	}

	props, wmJSON, err := s.watermarkProps(have, marks, s.mirrorProps(tbl.Properties()))
	if err != nil {
		return mr, err
	}
	txn := tbl.NewTransaction()
	var written, dataFiles, delFiles []iceberg.DataFile // this attempt's files
	if len(apply) > 0 {
		if dataFiles, err = s.writeMirrorRows(ctx, tbl, rec); err != nil {
			return mr, err
		}
		mr.extra = extra
		if len(dataFiles) == 0 {
			dels = apply // a row delta needs a file: deletes of keys the table never held
		}
		if len(dels) > 0 {
			if delFiles, err = txn.WriteEqualityDeletes(ctx, []int{mirrorFieldRowID}, keyRecords(tbl, dels)); err != nil {
				s.removeFiles(ctx, tbl, dataFiles)
				return mr, fmt.Errorf("mirror: write equality deletes: %w", err)
			}
		}
		mr.deleteFiles = len(delFiles)
		summary := iceberg.Properties{
			SummaryFlushID:       strconv.FormatUint(c.ID, 10),
			SummaryTrigger:       c.Reason,
			SummaryWatermarks:    string(wmJSON),
			SummaryMirrorRows:    strconv.FormatInt(mr.written, 10),
			SummaryMirrorDeletes: strconv.FormatInt(mr.deleted, 10),
			SummaryMirrorStale:   strconv.FormatInt(mr.stale, 10),
			SummaryMirrorExtra:   strconv.FormatInt(mr.extra, 10),
		}
		written = append(dataFiles, delFiles...)
		if err := txn.NewRowDelta(summary).AddRows(dataFiles...).AddDeletes(delFiles...).Commit(ctx); err != nil {
			s.removeFiles(ctx, tbl, written)
			return mr, fmt.Errorf("mirror: stage row delta: %w", err)
		}
	}
	// The tombstones of the winning deletes, in the same transaction.
	tup, err := s.planTombstones(ctx, tbl, idx, deletes)
	if err != nil {
		return mr, err
	}
	if v, ok := tup.prop(); ok {
		props[PropMirrorTombstones] = v
	}
	if len(props) > 0 {
		if err := txn.SetProperties(props); err != nil {
			return mr, fmt.Errorf("mirror: set properties: %w", err)
		}
	}
	if hook := s.cfg.BeforeMirrorCommit; hook != nil {
		if err := hook(name); err != nil {
			tup.abandon(ctx, tbl)
			return mr, fmt.Errorf("before mirror commit hook: %w", err)
		}
	}
	cctx := ctx
	if commitCtx != nil {
		cctx = commitCtx(ctx)
	}
	cctx = withCommitBase(withMirrorBase(cctx, decided), tbl)
	committed, err := txn.Commit(cctx)
	if errors.Is(err, errMirrorMoved) {
		// Refused before the catalog's update: nothing refers to the
		// files.
		s.removeFiles(ctx, tbl, written)
		tup.abandon(ctx, tbl)
	}
	if err != nil {
		// The outcome may be unknown: the index is reloaded next time
		// (the tombstone file may be referenced: it is left to orphan
		// cleanup).
		return mr, fmt.Errorf("mirror: catalog commit: %w", err)
	}
	committedOK = true
	mr.committed = true
	if tup.files != nil {
		idx.files = tup.files
	}
	if tup.merged {
		idx.forgetTombstones(tup.cutoff)
	}
	if snap := committed.CurrentSnapshot(); snap != nil && len(apply) > 0 {
		mr.snapshotID = snap.SnapshotID
		idx.snapshot = snap.SnapshotID
		mr.growth = growthOf(committed.Metadata(), snap, dataFiles, delFiles)
	}
	mr.duration = time.Since(start)
	s.countMirror(func(t *MirrorTotals) {
		if len(apply) > 0 {
			t.Commits++
		}
		t.RowsWritten += mr.written
		t.KeysDeleted += mr.deleted
		t.StaleChanges += mr.stale
		t.ExtraRows += mr.extra
	})
	s.log.Debug("iceberg mirror committed", "table", committed.Identifier(), "commit", c.ID, "rows", mr.written,
		"deleted", mr.deleted, "stale", mr.stale, "extra", mr.extra, "skipped", mr.skipped)
	return mr, nil
}

// mirrorDeleteKeys returns the changes whose keys need an equality delete:
// those that may have a row in the table. The index holds every key with a
// row (it is reloaded when the table has another writer's commit since its
// own: dropForeignIndex), so a key it does not know, or knows as deleted,
// has none: writing no delete for it keeps ever-new keys (W1's) from making
// delete files that compaction would only drop again. In multi-instance
// mode (ExclusiveMaintenance, ElectedCommitter) another instance may
// commit between the index's reload and this commit, and every key gets
// one, as the upsert rule says. A crash or a failed commit drops the
// index; it is reloaded from the table, and a replay the mirror's
// watermarks cover applies nothing.
func (s *Sink) mirrorDeleteKeys(idx *mirrorIndex, apply []*mirrorChange) []*mirrorChange {
	if s.cfg.ExclusiveMaintenance || s.cfg.ElectedCommitter {
		return apply
	}
	dels := make([]*mirrorChange, 0, len(apply))
	for _, ch := range apply {
		if e, ok := idx.entries.get(ch.key); ok && !e.deleted {
			dels = append(dels, ch)
		}
	}
	return dels
}

// dropForeignIndex forgets the table's index when the mirror has a
// snapshot since the index's that is not a compaction: another writer
// committed (the elected committer's role moved between instances, other
// instances with --elected-committer=false, another process on the
// catalog). An index that missed its commits would hold keys' orders older
// than the table's: a change it takes for new would replace a newer row,
// and a key it does not hold would get no delete. It is reloaded from the
// table, at the cost of reading the mirror's keys.
func (s *Sink) dropForeignIndex(name string, tbl *table.Table) {
	san := sink.SanitizeName(name)
	idx, ok := s.mirror.index(san)
	if !ok || onlyCompactedSince(tbl, idx.snapshot) {
		return
	}
	s.mirror.dropIndex(san)
	s.reportIndex(idx, true)
	s.log.Info("iceberg mirror table written by another writer since this one's last commit: reloading its index",
		"table", tbl.Identifier())
}

// mirrorCovered reports whether the mirror's watermarks have cover every
// source of spans.
func mirrorCovered(spans map[string]span, have map[string]sink.Watermark) bool {
	for src, sp := range spans {
		if have[src].BatchSeq < sp.maxBatch {
			return false
		}
	}
	return len(spans) > 0
}

// onlyCompactedSince reports whether every snapshot of tbl after snapshot
// id since (0: none) is a compaction, which keeps the rows as they were.
// A chain that does not reach since (expired, another writer's commit)
// answers false.
func onlyCompactedSince(tbl *table.Table, since int64) bool {
	snap := tbl.CurrentSnapshot()
	for range maxSnapshotWalk {
		switch {
		case snap == nil:
			return since == 0
		case snap.SnapshotID == since:
			return true
		case snap.Summary == nil || snap.Summary.Properties[SummaryMaintenance] == "" || snap.ParentSnapshotID == nil:
			return false
		}
		snap = tbl.Metadata().SnapshotByID(*snap.ParentSnapshotID)
	}
	return false
}

// maxSnapshotWalk bounds onlyCompactedSince's walk up the snapshot chain.
const maxSnapshotWalk = 1000

// mergeMirrorParts returns the winner per key across parts (each part has
// one change per key already), materialized for the commit. Changes their
// mirrorGroup dropped are left out: another part holds their key's winner.
func mergeMirrorParts(parts []*mirrorPart) []*mirrorChange {
	n := 0
	for _, p := range parts {
		n += p.len()
	}
	vals := make([]mirrorChange, 0, n)
	if len(parts) == 1 {
		for i := range parts[0].len() {
			if !parts[0].changes[i].dropped {
				vals = append(vals, parts[0].change(i))
			}
		}
	} else {
		type at struct{ part, i int }
		win := make([]at, 0, n)
		pos := make(map[string]int, n) // key -> position in win
		for pi, p := range parts {
			for i := range p.len() {
				if p.changes[i].dropped {
					continue // beaten in its group by another part's change
				}
				key := p.key(i)
				if j, ok := pos[key]; !ok {
					pos[key] = len(win)
					win = append(win, at{pi, i})
				} else if w := win[j]; compareOrder(p.order(i), parts[w.part].order(w.i)) > 0 {
					win[j] = at{pi, i}
				}
			}
		}
		for _, w := range win {
			vals = append(vals, parts[w.part].change(w.i))
		}
	}
	out := make([]*mirrorChange, len(vals))
	for i := range vals {
		out[i] = &vals[i]
	}
	return out
}

// evolveMirrorSchema adds the columns the rows need and widens the ones
// they outgrow, in a commit of its own before the rows' (a crash in
// between leaves optional columns no row uses yet). It returns tbl itself
// when the schema stays. rows are the decoded `after` objects of the rows
// that did not fit the schema, in order: a row that fits needs no change.
func (s *Sink) evolveMirrorSchema(ctx context.Context, tbl *table.Table, pin MirrorTableSchema, rows []map[string]any) (*table.Table, error) {
	plan := newSchemaPlan(tbl.Schema(), s.mirrorTyping())
	plan.pin(pin, s.pinnedAdds(tbl, pin, false))
	for _, m := range rows {
		plan.observeRow(m)
	}
	if len(plan.adds)+len(plan.widens) == 0 {
		return tbl, nil
	}
	txn := tbl.NewTransaction()
	u := txn.UpdateSchema(true, false)
	plan.apply(u)
	if err := u.Commit(); err != nil {
		return nil, fmt.Errorf("mirror: schema update: %w", err)
	}
	next, err := txn.Commit(ctx)
	if err != nil {
		if isRequirementFailure(err) {
			// Another writer changed the table since it was loaded (two
			// instances evolving one mirror's schema at once): decided
			// again on the table as it is now (commitMirror).
			return nil, fmt.Errorf("mirror: schema commit: %w: %w", errMirrorMoved, err)
		}
		return nil, fmt.Errorf("mirror: schema commit: %w", err)
	}
	s.countMirror(func(t *MirrorTotals) { t.SchemaUpdates++ })
	s.log.Info("iceberg mirror schema evolved", "table", next.Identifier(), "added", len(plan.adds), "widened", len(plan.widens),
		"schema_id", next.Schema().ID)
	return s.wrap(next), nil
}

// writeMirrorRows writes the record of the rows (buildMirrorRecord) as data
// files of the mirror table.
func (s *Sink) writeMirrorRows(ctx context.Context, tbl *table.Table, rec arrow.RecordBatch) ([]iceberg.DataFile, error) {
	if rec.NumRows() == 0 {
		return nil, nil
	}
	records := func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) }
	var (
		files []iceberg.DataFile
		n     int64
		werr  error
	)
	for df, err := range table.WriteRecords(ctx, tbl, rec.Schema(), records) {
		if err != nil {
			werr = errors.Join(werr, err)
			continue
		}
		files = append(files, df)
		n += df.Count()
	}
	if werr == nil && n != rec.NumRows() {
		werr = fmt.Errorf("%w: %d of %d mirror rows written", ErrIncompleteWrite, n, rec.NumRows())
	}
	if werr != nil {
		s.removeFiles(ctx, tbl, files)
		return nil, fmt.Errorf("mirror: write data files: %w", werr)
	}
	return files, nil
}

// keyRecords is the equality delete record of the touched keys.
func keyRecords(tbl *table.Table, changes []*mirrorChange) func(func(arrow.RecordBatch, error) bool) {
	return func(yield func(arrow.RecordBatch, error) bool) {
		key, _ := tbl.Schema().FindFieldByID(mirrorFieldRowID)
		sc, err := table.SchemaToArrowSchema(iceberg.NewSchema(0, key), nil, true, false)
		if err != nil {
			yield(nil, err)
			return
		}
		b := array.NewStringBuilder(memory.DefaultAllocator)
		defer b.Release()
		for _, ch := range changes {
			b.Append(ch.key)
		}
		col := b.NewArray()
		defer col.Release()
		yield(array.NewRecordBatch(sc, []arrow.Array{col}, int64(len(changes))), nil)
	}
}

// isRequirementFailure reports whether err is a catalog commit refused
// because the table changed since it was loaded: table.ErrCommitFailed,
// or iceberg-go's requirement errors, some of which it spells
// "Requirement failed" and some "requirement failed".
func isRequirementFailure(err error) bool {
	return errors.Is(err, table.ErrCommitFailed) || strings.Contains(strings.ToLower(err.Error()), "requirement failed")
}
