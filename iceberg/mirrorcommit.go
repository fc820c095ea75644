package iceberg

import (
	"context"
	"encoding/json"
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
	duration                                time.Duration
}

// commitMirror commits the mirror side of a table's staged parts (see
// mirror.go). It runs after the changelog commit of the same table.
func (s *Sink) commitMirror(ctx context.Context, name string, parts []*stagedTable, c sink.CommitInfo) (mirrorResult, error) {
	var mr mirrorResult
	start := time.Now()
	if err := s.lockCommits(ctx); err != nil {
		return mr, err
	}
	defer s.unlockCommits()
	tbl, err := s.loadOrCreateMirror(ctx, name)
	if err != nil {
		return mr, err
	}
	have, err := watermarksFromProps(tbl.Properties())
	if err != nil {
		return mr, err
	}
	winners := make(map[string]*mirrorChange)
	marks := make(map[string]sink.Watermark)
	for _, p := range parts {
		if p.mirror == nil {
			continue
		}
		done, err := spansCommitted(p.mirror.spans, have)
		if err != nil {
			return mr, fmt.Errorf("mirror: %w", err)
		}
		if done {
			mr.skipped += p.mirror.rows
			continue
		}
		for k, ch := range p.mirror.changes {
			if cur, ok := winners[k]; !ok || compareOrder(ch.order(), cur.order()) > 0 {
				winners[k] = ch
			}
		}
		for src, sp := range p.mirror.spans {
			sink.MergeWatermark(marks, src, sink.Watermark{BatchSeq: sp.maxBatch, EntrySeq: sp.maxEntry})
		}
	}
	if len(marks) == 0 {
		return mr, nil
	}
	idx, err := s.mirrorIndexFor(ctx, name, tbl)
	if err != nil {
		return mr, err
	}
	apply := make([]*mirrorChange, 0, len(winners))
	for k, ch := range winners {
		if cur, ok := idx.order[k]; ok && compareOrder(ch.order(), cur) <= 0 {
			mr.stale++
			continue
		}
		apply = append(apply, ch)
	}
	slices.SortFunc(apply, func(a, b *mirrorChange) int { return strings.Compare(a.key, b.key) })
	var rows []*mirrorChange
	for _, ch := range apply {
		if ch.op == codec.OpDelete {
			mr.deleted++
		} else {
			rows = append(rows, ch)
		}
	}
	mr.written = int64(len(rows))

	if tbl, err = s.evolveMirrorSchema(ctx, tbl, rows); err != nil {
		return mr, err
	}

	props := s.missingManagedProps(tbl.Properties())
	for src := range marks {
		if old, ok := have[src]; ok {
			sink.MergeWatermark(marks, src, old)
			if marks[src] == old {
				continue
			}
		}
		props[PropWatermarkPrefix+src] = encodeWatermark(marks[src])
	}
	txn := tbl.NewTransaction()
	if len(apply) > 0 {
		dataFiles, extra, err := s.writeMirrorRows(ctx, tbl, rows)
		if err != nil {
			return mr, err
		}
		mr.extra = extra
		var delFiles []iceberg.DataFile
		if dels := s.mirrorDeleteKeys(tbl, idx, apply); len(dels) > 0 {
			if delFiles, err = txn.WriteEqualityDeletes(ctx, []int{mirrorFieldRowID}, keyRecords(dels)); err != nil {
				s.removeFiles(ctx, tbl, dataFiles)
				return mr, fmt.Errorf("mirror: write equality deletes: %w", err)
			}
		}
		wmJSON, _ := json.Marshal(toJSONWatermarks(marks)) // cannot fail
		summary := iceberg.Properties{
			SummaryFlushID:       strconv.FormatUint(c.ID, 10),
			SummaryTrigger:       c.Reason,
			SummaryWatermarks:    string(wmJSON),
			SummaryMirrorRows:    strconv.FormatInt(mr.written, 10),
			SummaryMirrorDeletes: strconv.FormatInt(mr.deleted, 10),
			SummaryMirrorStale:   strconv.FormatInt(mr.stale, 10),
			SummaryMirrorExtra:   strconv.FormatInt(mr.extra, 10),
		}
		if err := txn.NewRowDelta(summary).AddRows(dataFiles...).AddDeletes(delFiles...).Commit(ctx); err != nil {
			s.removeFiles(ctx, tbl, append(dataFiles, delFiles...))
			return mr, fmt.Errorf("mirror: stage row delta: %w", err)
		}
	}
	if len(props) > 0 {
		if err := txn.SetProperties(props); err != nil {
			return mr, fmt.Errorf("mirror: set properties: %w", err)
		}
	}
	committed, err := txn.Commit(ctx)
	if err != nil {
		// The outcome may be unknown: forget the index, reload it next time.
		delete(s.mirror.indexes, sink.SanitizeName(name))
		return mr, fmt.Errorf("mirror: catalog commit: %w", err)
	}
	for _, ch := range apply {
		idx.order[ch.key] = ch.order()
	}
	if snap := committed.CurrentSnapshot(); snap != nil && len(apply) > 0 {
		mr.snapshotID = snap.SnapshotID
		idx.snapshot = snap.SnapshotID
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

// evolveMirrorSchema adds the columns the rows need and widens the ones
// they outgrow, in a commit of its own before the rows' (a crash in
// between leaves optional columns no row uses yet).
func (s *Sink) evolveMirrorSchema(ctx context.Context, tbl *table.Table, rows []*mirrorChange) (*table.Table, error) {
	plan := newSchemaPlan(tbl.Schema(), s.cfg.MirrorNestedAsJSON)
	for _, ch := range rows {
		if m, ok := parseAfter(ch.after); ok {
			plan.observeRow(m)
		}
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
		return nil, fmt.Errorf("mirror: schema commit: %w", err)
	}
	s.countMirror(func(t *MirrorTotals) { t.SchemaUpdates++ })
	s.log.Info("iceberg mirror schema evolved", "table", next.Identifier(), "added", len(plan.adds), "widened", len(plan.widens),
		"schema_id", next.Schema().ID)
	return s.wrap(next), nil
}

// writeMirrorRows writes the rows as data files of the mirror table.
func (s *Sink) writeMirrorRows(ctx context.Context, tbl *table.Table, rows []*mirrorChange) ([]iceberg.DataFile, int64, error) {
	if len(rows) == 0 {
		return nil, 0, nil
	}
	rec, extra, err := buildMirrorRecord(tbl.Schema(), rows, s.cfg.MirrorNestedAsJSON)
	if err != nil {
		return nil, 0, err
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
	if werr == nil && n != int64(len(rows)) {
		werr = fmt.Errorf("%w: %d of %d mirror rows written", ErrIncompleteWrite, n, len(rows))
	}
	if werr != nil {
		s.removeFiles(ctx, tbl, files)
		return nil, 0, fmt.Errorf("mirror: write data files: %w", werr)
	}
	return files, extra, nil
}

// keyRecords is the equality delete record of the touched keys.
func keyRecords(changes []*mirrorChange) func(func(arrow.RecordBatch, error) bool) {
	return func(yield func(arrow.RecordBatch, error) bool) {
		sc, err := table.SchemaToArrowSchema(iceberg.NewSchema(0, MirrorSchema().Field(0)), nil, true, false)
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

// mirrorIndexFor returns the table's index, loading it from the table's
// rows on first use.
func (s *Sink) mirrorIndexFor(ctx context.Context, name string, tbl *table.Table) (*mirrorIndex, error) {
	san := sink.SanitizeName(name)
	if idx, ok := s.mirror.indexes[san]; ok {
		return idx, nil
	}
	idx := &mirrorIndex{order: make(map[string]orderKey)}
	if snap := tbl.CurrentSnapshot(); snap != nil {
		idx.snapshot = snap.SnapshotID
		_, it, err := tbl.Scan(table.WithSelectedFields(mirrorColRowID, mirrorColSourceID, mirrorColEntrySeq, mirrorColEventTime)).
			ToArrowRecords(ctx)
		if err != nil {
			return nil, fmt.Errorf("mirror: load index: %w", err)
		}
		sources := make(map[string]string)
		for rec, err := range it {
			if err != nil {
				return nil, fmt.Errorf("mirror: load index: %w", err)
			}
			if err := indexRecord(idx, rec, sources); err != nil {
				rec.Release()
				return nil, err
			}
			rec.Release()
		}
	}
	s.mirror.indexes[san] = idx
	return idx, nil
}

func indexRecord(idx *mirrorIndex, rec arrow.RecordBatch, sources map[string]string) error {
	col := func(name string) arrow.Array {
		if i := fieldIndex(rec.Schema(), name); i >= 0 {
			return rec.Column(i)
		}
		return nil
	}
	keys, ok1 := col(mirrorColRowID).(*array.String)
	srcs, ok2 := col(mirrorColSourceID).(*array.String)
	seqs, ok3 := col(mirrorColEntrySeq).(*array.Int64)
	tss, ok4 := col(mirrorColEventTime).(*array.Timestamp)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return errors.New("mirror: load index: unexpected system column types")
	}
	for i := 0; i < keys.Len(); i++ {
		src := srcs.Value(i)
		if interned, ok := sources[src]; ok {
			src = interned
		} else {
			src = strings.Clone(src)
			sources[src] = src
		}
		idx.order[strings.Clone(keys.Value(i))] = orderKey{eventMs: uint64(tss.Value(i)) / 1000, source: src, entry: uint64(seqs.Value(i))}
	}
	return nil
}

// mirrorDeleteKeys returns the changes whose keys need an equality delete.
// A key the index does not know has no row in the table (the index holds
// every key with a row: loaded from the table's rows, then kept by each
// commit), so an insert of a new key needs none: a table of ever-new keys
// then gets no delete files at all. That holds only while this sink is the
// table's one writer: with multi-instance mode (ExclusiveMaintenance), or
// when the table has a snapshot since the index's that is neither the
// index's nor a compaction (another writer's commit), every key gets one.
func (s *Sink) mirrorDeleteKeys(tbl *table.Table, idx *mirrorIndex, apply []*mirrorChange) []*mirrorChange {
	if s.cfg.ExclusiveMaintenance || !onlyCompactedSince(tbl, idx.snapshot) {
		return apply
	}
	dels := make([]*mirrorChange, 0, len(apply))
	for _, ch := range apply {
		if _, known := idx.order[ch.key]; known {
			dels = append(dels, ch)
		}
	}
	return dels
}

// onlyCompactedSince reports whether every snapshot of tbl after snapshot
// id since (0: none) is a compaction, which leaves the rows as they were.
func onlyCompactedSince(tbl *table.Table, since int64) bool {
	for snap, steps := tbl.CurrentSnapshot(), 0; ; steps++ {
		switch {
		case snap == nil:
			return since == 0
		case snap.SnapshotID == since:
			return true
		case steps > maxSnapshotWalk || snap.Summary == nil || snap.Summary.Properties["lakehouse.maintenance"] == "" || snap.ParentSnapshotID == nil:
			return false
		}
		snap = tbl.Metadata().SnapshotByID(*snap.ParentSnapshotID)
	}
}

// maxSnapshotWalk bounds onlyCompactedSince's walk up the snapshot chain.
const maxSnapshotWalk = 1000
