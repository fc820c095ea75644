package iceberg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"net/url"
	"sort"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/pace"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// discardTimeout bounds deleting the data files of a failed stage.
const discardTimeout = 10 * time.Second

// staged is a flush whose data files are written and not yet committed. It
// implements sink.Staged.
type staged struct {
	id      uint64
	tables  []*stagedTable
	rows    int64
	bytes   int64
	skipped int64 // rows the watermarks already covered when staged
}

func (st *staged) StagedRows() int64  { return st.rows }
func (st *staged) StagedBytes() int64 { return st.bytes }

// stagedTable is the part of a staged flush that goes to one table.
type stagedTable struct {
	name  string // the CDC table name as sent
	files []iceberg.DataFile
	rows  int64
	bytes int64
	// spans holds, per source with rows in the files, the range of batch
	// sequences those rows came from: CommitStaged compares it with the
	// table's watermarks to tell a committed stage from a new one.
	spans map[string]span
	// mirror is the folded mirror side of the rows (Config.Mirror), or nil.
	// With Config.ElectedCommitter its changes are in mirrorFile instead
	// (mirrorchanges.go), and mirror has no changes.
	mirror     *mirrorPart
	mirrorFile changeFile
	// group is the mirrorGroup mirror is a part of (direct commits), or nil.
	group *mirrorGroup
	// partID is the part's row in PartsTable once published
	// (Config.ElectedCommitter), 0 before.
	partID int64
}

type span struct {
	minBatch, maxBatch uint64
	maxEntry           uint64
}

func (sp *span) add(batch, entry uint64) {
	if sp.minBatch == 0 || batch < sp.minBatch {
		sp.minBatch = batch
	}
	sp.maxBatch = max(sp.maxBatch, batch)
	sp.maxEntry = max(sp.maxEntry, entry)
}

// ErrIncompleteWrite reports that iceberg-go wrote fewer rows than were
// handed to it. iceberg-go v0.7.0 can lose a data file write error (a rolling
// writer that fails early removes itself before its error is collected); the
// sink counts the rows of every file written and refuses to stage or commit
// such a write.
var ErrIncompleteWrite = errors.New("iceberg: data files are missing rows (a data file write failed)")

// Stage implements sink.Stager: for each table of f it drops the rows the
// table's watermarks already cover, sorts the rest by (source, entry
// sequence) and writes them as data files that no snapshot references yet.
func (s *Sink) Stage(ctx context.Context, f *sink.Flush) (sink.Staged, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.stageLocked(ctx, f)
	if err != nil {
		return nil, err
	}
	s.groupStaged(st)
	return st, nil
}

func (s *Sink) stageLocked(ctx context.Context, f *sink.Flush) (*staged, error) {
	if s.closed {
		return nil, errors.New("iceberg: sink is closed")
	}
	st := &staged{id: f.ID}
	if len(f.Tables) == 0 {
		return st, nil
	}
	// One table after the other, on this goroutine: staging runs beside
	// ingest, whose acks wait for the write-ahead log's writer. Building the
	// next table's record while writing the previous one kept two
	// goroutines busy on two cores, and at 150k entries/s the acks' p99 went
	// from 64 ms to 151 ms (the log's append p90 from 6 to 50 ms), for
	// staging throughput that sustained load does not need. For the same
	// reason the work steps aside every millisecond (internal/pace).
	var pacer pace.Pacer
	for i := range f.Tables {
		t := &f.Tables[i]
		if err := ctx.Err(); err != nil {
			s.forgetStaged(ctx, st)
			return nil, fmt.Errorf("iceberg: stage: %w", context.Cause(ctx))
		}
		p := s.prepare(ctx, f, t, &pacer)
		stt, err := s.writePrepared(ctx, t, p)
		st.skipped += p.skipped
		p.release()
		if err != nil {
			s.forgetStaged(ctx, st)
			return nil, fmt.Errorf("iceberg: stage table %q (flush %d): %w", t.Name, f.ID, err)
		}
		if stt != nil {
			st.tables = append(st.tables, stt)
			st.rows += stt.rows
			st.bytes += stt.bytes
		}
	}
	return st, nil
}

// prepared is a table's rows made ready for writing.
type prepared struct {
	tbl     *table.Table
	rows    int64
	skipped int64
	spans   map[string]span
	// minMs and maxMs bound the event times (ms) of the rows to write.
	minMs, maxMs int64
	// sorted holds the rows to write, by (source, entry sequence); none
	// when every row was already committed. The entries' bytes are the
	// flush's: valid until the stage returns.
	sorted       []*sink.Row
	ingestMicros int64       // the flush time, the rows' ingest_time
	mirror       *mirrorPart // nil when the mirror is off or already holds every row
	err          error
}

func (p *prepared) release() {
	if p != nil {
		p.sorted = nil
	}
}

// prepare loads (or creates) the table, drops the rows its watermarks
// already cover, and sorts the rest.
func (s *Sink) prepare(ctx context.Context, f *sink.Flush, t *sink.Table, pacer *pace.Pacer) *prepared {
	p := &prepared{}
	p.tbl, p.err = s.stageTable(ctx, t.Name)
	if p.err != nil {
		return p
	}
	have, err := watermarksFromProps(p.tbl.Properties())
	if err != nil {
		p.err = err
		return p
	}
	if s.mirrored(t.Name) {
		// The mirror's own watermarks decide what it still needs: after a
		// crash between the changelog's commit and the mirror's, the
		// changelog skips rows the mirror must still apply.
		mwm, err := s.stageMirrorWatermarks(ctx, t.Name)
		if err != nil {
			p.err = err
			return p
		}
		p.mirror = foldMirror(t, mwm, pacer)
		pacer.Yield()
	}
	rows := make([]*sink.Row, 0, len(t.Rows))
	p.spans = make(map[string]span)
	p.minMs, p.maxMs = math.MaxInt64, math.MinInt64
	for i := range t.Rows {
		r := &t.Rows[i]
		if w, ok := have[r.SourceID]; ok && r.BatchSeq <= w.BatchSeq {
			p.skipped++
			continue
		}
		rows = append(rows, r)
		p.minMs, p.maxMs = min(p.minMs, int64(r.Timestamp)), max(p.maxMs, int64(r.Timestamp))
		sp := p.spans[r.SourceID]
		sp.add(r.BatchSeq, r.Sequence)
		p.spans[r.SourceID] = sp
	}
	p.rows = int64(len(rows))
	if len(rows) == 0 {
		return p
	}
	pacer.Yield()
	sortRows(rows)
	pacer.Yield()
	p.sorted, p.ingestMicros = rows, f.Time.UnixMicro()
	return p
}

// stageTable loads (or creates) the table of CDC table name for staging,
// once per commit: a table's metadata is read from the catalog and parsed at
// each load, which cost about 9% of the server's CPU at 150k entries/s with a
// stage every half second. Staging needs the schema, spec, location and
// properties, which only a commit changes (a commit drops the cache:
// dropStageCache); the watermarks read from them only drop rows early, and the commit
// checks against the latest table anyway.
func (s *Sink) stageTable(ctx context.Context, name string) (*table.Table, error) {
	if tbl, ok := s.stageTables[name]; ok {
		return tbl, nil
	}
	tbl, err := s.loadOrCreate(ctx, sink.SanitizeName(name), name)
	if err != nil {
		return nil, err
	}
	if s.stageTables == nil {
		s.stageTables = make(map[string]*table.Table)
	}
	s.stageTables[name] = tbl
	return tbl, nil
}

// dropStageCache forgets what Stage cached (the tables and the mirrors it
// read watermarks from): a commit attempt changes the tables' watermarks, so the next
// Stage loads them again. Called with mu held.
func (s *Sink) dropStageCache() {
	s.takeStageBases()
}

// writePrepared writes a prepared table's record as data files and records
// them as staged. It returns nil when there was nothing to write.
func (s *Sink) writePrepared(ctx context.Context, t *sink.Table, p *prepared) (*stagedTable, error) {
	if p.err != nil {
		return nil, p.err
	}
	if len(p.sorted) == 0 {
		if p.mirror == nil {
			return nil, nil
		}
		stt := &stagedTable{name: t.Name, spans: map[string]span{}, mirror: p.mirror}
		if err := s.stageMirrorChanges(ctx, p.tbl, stt); err != nil {
			return nil, err
		}
		return stt, nil
	}
	stt := &stagedTable{name: t.Name, spans: p.spans, mirror: p.mirror}
	written, entry, err := s.writeStage(ctx, p)
	if err != nil {
		return nil, err
	}
	var werr error
	for df, err := range written {
		if err == nil {
			df, err = entry(df)
		}
		if err != nil {
			werr = errors.Join(werr, err)
			continue
		}
		stt.files = append(stt.files, df)
		stt.rows += df.Count()
		stt.bytes += df.FileSizeBytes()
	}
	s.markStaged(stt.files)
	if werr == nil && stt.rows != p.rows {
		werr = fmt.Errorf("%w: %d of %d rows written", ErrIncompleteWrite, stt.rows, p.rows)
	}
	if werr != nil {
		s.discardFiles(ctx, p.tbl, stt.files)
		return nil, fmt.Errorf("write data files: %w", werr)
	}
	if err := s.stageMirrorChanges(ctx, p.tbl, stt); err != nil {
		s.discardFiles(ctx, p.tbl, stt.files)
		return nil, err
	}
	s.count(func(t *MaintenanceTotals) { t.BytesStaged += stt.bytes })
	// Files in a stable order, for the manifests and the tests.
	sort.Slice(stt.files, func(i, j int) bool { return stt.files[i].FilePath() < stt.files[j].FilePath() })
	return stt, nil
}

// writeStage writes the sorted rows of a prepared table into new files,
// and returns them with the function that turns each into its manifest
// entry. Rows of one partition (timePartition), the common case, are
// written on this goroutine, straight from the entries (stagewrite.go);
// any others, or a table whose columns are not the changelog's, from an
// Arrow record: through iceberg-go's writer and a write view (stageView)
// for several partitions.
func (s *Sink) writeStage(ctx context.Context, p *prepared) (iter.Seq2[iceberg.DataFile, error], func(iceberg.DataFile) (iceberg.DataFile, error), error) {
	dir, partition, one := timePartition(p.tbl, p.minMs, p.maxMs)
	if one {
		files, ok, err := s.writeRowsOnePartition(ctx, p.tbl, dir, p.sorted, p.ingestMicros)
		if ok {
			return dataFiles(files, err), viewEntry(p.tbl.Metadata(), true, true, partition), nil
		}
	}
	var pacer pace.Pacer
	rec, err := buildRecord(s.schema, p.sorted, p.ingestMicros, &pacer)
	if err != nil {
		return nil, nil, err
	}
	records := func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) }
	if one {
		if files, ok, err := s.writeOnePartition(ctx, p.tbl, dir, rec.Schema(), records, s.stagedPageCap()); ok {
			return dataFiles(files, err), viewEntry(p.tbl.Metadata(), true, true, partition), nil
		}
	}
	wtbl, entry, err := s.stageView(p.tbl, p.minMs, p.maxMs) // prepare sorted the rows
	if err != nil {
		rec.Release()
		return nil, nil, err
	}
	return table.WriteRecords(ctx, wtbl, s.schema, records), entry, nil
}

func (s *Sink) markStaged(files []iceberg.DataFile) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	for _, df := range files {
		s.staged[pathKey(df.FilePath())] = struct{}{}
	}
}

func (s *Sink) markStagedPath(path string) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	s.staged[pathKey(path)] = struct{}{}
}

func (s *Sink) unmarkStagedPath(path string) {
	if path == "" {
		return
	}
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	delete(s.staged, pathKey(path))
}

func (s *Sink) unmarkStaged(files []iceberg.DataFile) {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	for _, df := range files {
		delete(s.staged, pathKey(df.FilePath()))
	}
}

// stageMirrorChanges writes the mirror changes of stt as a change file
// for the elected committer (Config.ElectedCommitter), and drops them from
// memory: the file holds them until the commit.
func (s *Sink) stageMirrorChanges(ctx context.Context, tbl *table.Table, stt *stagedTable) error {
	if !s.cfg.ElectedCommitter || stt.mirror == nil {
		return nil
	}
	cf, err := writeMirrorChanges(ctx, tbl, stt.mirror)
	if err != nil {
		return err
	}
	s.markStagedPath(cf.path)
	stt.mirrorFile = cf
	stt.mirror.dropChanges()
	return nil
}

// forgetStaged drops a staged flush that will not be committed (its stage
// failed in a later table) and deletes its files.
func (s *Sink) forgetStaged(ctx context.Context, st *staged) {
	for _, t := range st.tables {
		tbl, ok := s.stageTables[t.name]
		if !ok {
			s.unmarkStaged(t.files) // orphans, for cleanup
			s.unmarkStagedPath(t.mirrorFile.path)
			continue
		}
		s.discardFiles(ctx, tbl, t.files)
		s.discardChangeFile(ctx, tbl, t)
	}
}

// discardChangeFile deletes the change file of a staged table that will
// not be published (or whose part the committer will not apply).
func (s *Sink) discardChangeFile(ctx context.Context, tbl *table.Table, t *stagedTable) {
	path := t.mirrorFile.path
	if path == "" {
		return
	}
	s.unmarkStagedPath(path)
	t.mirrorFile = changeFile{}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	s.removePaths(ctx, tbl, path)
}

// discardFiles deletes the data files of a stage that failed. No snapshot
// ever referenced them, and the batches are staged again from the buffer
// or the log: left to orphan cleanup, they would take space for
// DefaultOrphanAge (a day), which a storage outage that fails stage after
// stage multiplies. The deletes run even when ctx ended (a stage's deadline
// is a common cause of the failure), for at most discardTimeout: the stage
// lock is held meanwhile, and a store that stalls should not hold it
// longer. What is not deleted is left to orphan cleanup.
func (s *Sink) discardFiles(ctx context.Context, tbl *table.Table, files []iceberg.DataFile) {
	s.unmarkStaged(files)
	if len(files) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	s.removeFiles(ctx, tbl, files)
}

// isStaged reports whether path is a staged, uncommitted data file.
func (s *Sink) isStaged(path string) bool {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	_, ok := s.staged[pathKey(path)]
	return ok
}

// pathKey is a file location without its scheme, so that "file:///a/b",
// "file:/a/b" and "/a/b" (orphan cleanup hands out either) compare equal.
func pathKey(p string) string {
	if u, err := url.Parse(p); err == nil && u.Scheme != "" {
		return u.Host + u.Path
	}
	return p
}
