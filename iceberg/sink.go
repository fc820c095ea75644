// Package iceberg is the production sink: it commits each flush's tables to
// Apache Iceberg tables (Parquet with zstd) through github.com/apache/iceberg-go,
// one append snapshot per table per flush, with the flush's per-source
// watermarks stored as table properties in the same commit, so that retries,
// partial multi-table flushes and restarts never write a row twice.
//
// Watermarks: every committed table holds, per source, a table property
// "lakehouse.watermark.<source id>" = {"batch_seq":N,"entry_seq":M}, set in
// the same transaction as the append (table properties survive snapshot
// expiry). Before writing, the sink reloads the table and skips rows whose
// batch sequence is at or below the stored watermark of their source.
// Sink.Watermarks is the maximum over the namespace's tables. The append's
// snapshot summary also records the flush id, trigger, row counts and the
// flush's watermarks (lakehouse.* keys).
//
// Failures: a failed table commit leaves no snapshot referencing its data
// files (orphan files may remain for a maintenance job). Commit conflicts are
// replayed by iceberg-go (commit.retry.num-retries) and then retried by the
// sink after a reload. Every staged append is checked to hold all its rows
// before it is committed, because iceberg-go v0.7.0 can drop a data-file
// write error and stage an append without the file (ErrIncompleteWrite).
//
// Catalogs: iceberg-go's SQL catalog on SQLite (default, in the data
// directory) or PostgreSQL, the REST catalog and Glue. Storage: any FileIO
// iceberg-go supports (file://, mem://, s3:// including S3-compatible
// endpoints, gs://, azblob://).
package iceberg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// Sink commits flushes to Iceberg tables. It implements sink.Sink. Commits
// of one Sink are serialised; several Sinks (or processes) may share a
// catalog as long as each source is written by one of them at a time.
type Sink struct {
	cfg    Config
	cat    catalog.Catalog
	ns     table.Identifier
	log    *slog.Logger
	schema *arrow.Schema

	mu     sync.Mutex // serialises Commit
	closed bool
}

var _ sink.Sink = (*Sink)(nil)

// Open opens the catalog described by cfg and makes sure the namespace
// exists.
func Open(ctx context.Context, cfg Config) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	asc, err := changelogArrowSchema()
	if err != nil {
		return nil, err
	}
	cat, err := openCatalog(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:    cfg,
		cat:    cat,
		ns:     catalog.ToIdentifier(cfg.Namespace),
		log:    cfg.Logger.With("component", "iceberg-sink"),
		schema: asc,
	}
	if err := s.ensureNamespace(ctx); err != nil {
		_ = s.closeCatalog()
		return nil, err
	}
	s.log.Info("iceberg sink open", "catalog", cfg.CatalogType, "warehouse", cfg.Warehouse, "namespace", cfg.Namespace)
	return s, nil
}

func (s *Sink) ensureNamespace(ctx context.Context) error {
	ok, err := s.cat.CheckNamespaceExists(ctx, s.ns)
	if err != nil {
		return fmt.Errorf("iceberg: check namespace %q: %w", s.cfg.Namespace, err)
	}
	if ok {
		return nil
	}
	err = s.cat.CreateNamespace(ctx, s.ns, iceberg.Properties{"comment": "CDC changelog tables written by lakehouse"})
	if err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
		return fmt.Errorf("iceberg: create namespace %q: %w", s.cfg.Namespace, err)
	}
	return nil
}

// Close releases the catalog (and its database handle). It waits for a
// running Commit to finish.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.closeCatalog()
}

func (s *Sink) closeCatalog() error {
	if c, ok := s.cat.(catalog.Closer); ok {
		if err := c.Close(); err != nil {
			return fmt.Errorf("iceberg: close catalog: %w", err)
		}
	}
	return nil
}

// Config returns the sink's configuration with defaults filled in.
func (s *Sink) Config() Config { return s.cfg }

// Catalog returns the underlying iceberg-go catalog.
func (s *Sink) Catalog() catalog.Catalog { return s.cat }

// Identifier returns the Iceberg identifier of a CDC table (original or
// already sanitised name).
func (s *Sink) Identifier(name string) table.Identifier {
	return append(slices.Clone(s.ns), sink.SanitizeName(name))
}

// Commit implements sink.Sink: for each table of f, in order, it skips the
// rows already covered by the table's stored watermarks, appends the rest as
// one snapshot and stores the merged watermarks in the same commit. It stops
// at the first table that fails; tables committed before stay committed and
// are recognised by their watermarks when f is retried.
//
// Preparing a table (loading it, filtering, sorting and building its Arrow
// record) overlaps with the commit of the table before it.
func (s *Sink) Commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res sink.Result
	if s.closed {
		return res, errors.New("iceberg: sink is closed")
	}
	if len(f.Tables) == 0 {
		return res, nil
	}

	pctx, cancel := context.WithCancel(ctx)
	prepCh := make(chan *prepared, 1)
	go func() {
		defer close(prepCh)
		for i := range f.Tables {
			p := s.prepare(pctx, f, &f.Tables[i])
			select {
			case prepCh <- p:
			case <-pctx.Done():
				p.release()
				return
			}
		}
	}()
	// On return, stop the preparer and wait for it: the flush's byte slices
	// must not be touched after Commit returns.
	defer func() {
		cancel()
		for p := range prepCh {
			p.release()
		}
	}()

	for i := range f.Tables {
		t := &f.Tables[i]
		p, ok := <-prepCh
		if !ok {
			return res, fmt.Errorf("iceberg: commit: %w", context.Cause(ctx))
		}
		tr, err := s.commitTable(ctx, f, t, p)
		res.RowsSkipped += tr.skipped
		if err != nil {
			return res, fmt.Errorf("iceberg: commit table %q (flush %d): %w", t.Name, f.ID, err)
		}
		if tr.written > 0 {
			res.RowsWritten += tr.written
			res.BytesWritten += tr.bytes
			res.Paths = append(res.Paths, tr.paths...)
			res.Tables++
		}
	}
	return res, nil
}

type tableResult struct {
	written, skipped, bytes int64
	paths                   []string
}

// prepared is a table made ready for its commit against a loaded state.
type prepared struct {
	tbl     *table.Table
	skipped int64
	rows    int64
	rec     arrow.RecordBatch // nil when every row was already committed
	props   iceberg.Properties
	summary iceberg.Properties
	err     error
}

func (p *prepared) release() {
	if p != nil && p.rec != nil {
		p.rec.Release()
		p.rec = nil
	}
}

// commitTable commits one prepared table, retrying conflicts that
// iceberg-go's own replay did not resolve: each retry reloads the table, so
// the watermark check runs against the latest committed state.
func (s *Sink) commitTable(ctx context.Context, f *sink.Flush, t *sink.Table, p *prepared) (tableResult, error) {
	var lastErr error
	for attempt := 1; attempt <= s.cfg.CommitAttempts; attempt++ {
		if p == nil {
			p = s.prepare(ctx, f, t)
		}
		tr, err := s.commitPrepared(ctx, f, t, p)
		p.release()
		p = nil
		if err == nil {
			return tr, nil
		}
		if !errors.Is(err, table.ErrCommitFailed) || ctx.Err() != nil {
			return tr, err
		}
		lastErr = err
		s.log.Warn("iceberg commit conflict, reloading and retrying", "table", t.Name, "flush", f.ID, "attempt", attempt, "err", err)
	}
	return tableResult{}, fmt.Errorf("after %d attempts: %w", s.cfg.CommitAttempts, lastErr)
}

// prepare loads (or creates) the table, drops the rows its watermarks
// already cover, and builds the Arrow record and properties of the commit.
func (s *Sink) prepare(ctx context.Context, f *sink.Flush, t *sink.Table) *prepared {
	p := &prepared{}
	p.tbl, p.err = s.loadOrCreate(ctx, sink.SanitizeName(t.Name), t.Name)
	if p.err != nil {
		return p
	}
	have, err := watermarksFromProps(p.tbl.Properties())
	if err != nil {
		p.err = err
		return p
	}
	rows := make([]*sink.Row, 0, len(t.Rows))
	fromRows := make(map[string]sink.Watermark)
	for i := range t.Rows {
		r := &t.Rows[i]
		if w, ok := have[r.SourceID]; ok && r.BatchSeq <= w.BatchSeq {
			p.skipped++
			continue
		}
		rows = append(rows, r)
		sink.MergeWatermark(fromRows, r.SourceID, sink.Watermark{BatchSeq: r.BatchSeq, EntrySeq: r.Sequence})
	}
	p.rows = int64(len(rows))
	if len(rows) == 0 {
		return p
	}

	// The watermarks stored with this commit: the flush's, plus any source
	// of the rows the flush did not list, merged with the table's.
	flushWM := maps.Clone(f.Watermarks)
	if flushWM == nil {
		flushWM = make(map[string]sink.Watermark)
	}
	for src, w := range fromRows {
		sink.MergeWatermark(flushWM, src, w)
	}
	p.props = make(iceberg.Properties, len(flushWM))
	for src, w := range flushWM {
		merged := w
		if old, ok := have[src]; ok {
			m := map[string]sink.Watermark{src: old}
			sink.MergeWatermark(m, src, w)
			merged = m[src]
			if merged == old {
				continue
			}
		}
		p.props[PropWatermarkPrefix+src] = encodeWatermark(merged)
	}
	wmJSON, err := json.Marshal(toJSONWatermarks(flushWM))
	if err != nil {
		p.err = fmt.Errorf("encode watermarks: %w", err)
		return p
	}
	p.summary = iceberg.Properties{
		SummaryFlushID:    strconv.FormatUint(f.ID, 10),
		SummaryTrigger:    f.Reason,
		SummaryRows:       strconv.Itoa(len(rows)),
		SummarySkipped:    strconv.FormatInt(p.skipped, 10),
		SummaryWatermarks: string(wmJSON),
	}
	sortRows(rows)
	p.rec, p.err = buildRecord(s.schema, rows, f.Time.UnixMicro())
	return p
}

// commitPrepared writes the prepared record's data files and commits them
// with the watermark properties in one transaction.
func (s *Sink) commitPrepared(ctx context.Context, f *sink.Flush, t *sink.Table, p *prepared) (tableResult, error) {
	tr := tableResult{skipped: p.skipped}
	if p.err != nil {
		return tr, p.err
	}
	if p.rec == nil {
		s.log.Debug("iceberg table already holds the flush", "table", t.Name, "flush", f.ID, "skipped", p.skipped)
		return tr, nil
	}
	if s.cfg.BeforeTableCommit != nil {
		if err := s.cfg.BeforeTableCommit(t.Name); err != nil {
			return tr, fmt.Errorf("before commit hook: %w", err)
		}
	}
	rdr, err := array.NewRecordReader(s.schema, []arrow.RecordBatch{p.rec})
	if err != nil {
		return tr, fmt.Errorf("record reader: %w", err)
	}
	defer rdr.Release()

	txn := p.tbl.NewTransaction()
	if err := txn.Append(ctx, rdr, p.summary); err != nil {
		return tr, fmt.Errorf("write data files: %w", err)
	}
	if err := verifyStaged(txn, f.ID, p.rows); err != nil {
		return tr, err
	}
	if len(p.props) > 0 {
		if err := txn.SetProperties(p.props); err != nil {
			return tr, fmt.Errorf("set watermark properties: %w", err)
		}
	}
	committed, err := txn.Commit(ctx)
	if err != nil {
		return tr, fmt.Errorf("catalog commit: %w", err)
	}
	tr.written = p.rows
	tr.paths, tr.bytes, err = s.addedFiles(ctx, committed)
	if err != nil {
		// The commit succeeded; only the report is incomplete.
		s.log.Warn("iceberg commit succeeded but its data files could not be listed", "table", committed.Identifier(), "err", err)
	}
	s.log.Debug("iceberg table committed", "table", committed.Identifier(), "flush", f.ID,
		"rows", tr.written, "skipped", tr.skipped, "files", len(tr.paths), "bytes", tr.bytes)
	return tr, nil
}

// ErrIncompleteWrite reports that iceberg-go staged an append holding fewer
// rows than were handed to it. iceberg-go v0.7.0 can lose a data file write
// error (a rolling writer that fails early removes itself before its error is
// collected) and stage an append without the file; the sink checks every
// staged append and refuses to commit such a one.
var ErrIncompleteWrite = errors.New("iceberg: staged append is missing rows (a data file write failed)")

// verifyStaged checks that the transaction's staged snapshot is this flush's
// append with every row.
func verifyStaged(txn *table.Transaction, flushID uint64, rows int64) error {
	staged, err := txn.StagedTable()
	if err != nil {
		return fmt.Errorf("staged table: %w", err)
	}
	snap := staged.CurrentSnapshot()
	if snap == nil || snap.Summary == nil {
		return fmt.Errorf("%w: no staged snapshot", ErrIncompleteWrite)
	}
	sum := snap.Summary.Properties
	if sum[SummaryFlushID] != strconv.FormatUint(flushID, 10) {
		return fmt.Errorf("%w: staged snapshot is not flush %d's", ErrIncompleteWrite, flushID)
	}
	if got := sum["added-records"]; got != strconv.FormatInt(rows, 10) {
		if got == "" {
			got = "0"
		}
		return fmt.Errorf("%w: %s of %d rows staged", ErrIncompleteWrite, got, rows)
	}
	return nil
}

// addedFiles lists the data files added by tbl's current snapshot.
func (s *Sink) addedFiles(ctx context.Context, tbl *table.Table) ([]string, int64, error) {
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return nil, 0, errors.New("no current snapshot")
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, 0, err
	}
	mans, err := snap.Manifests(fs)
	if err != nil {
		return nil, 0, err
	}
	var (
		paths []string
		bytes int64
	)
	for _, m := range mans {
		if m.ManifestContent() != iceberg.ManifestContentData || m.SnapshotID() != snap.SnapshotID || m.AddedDataFiles() == 0 {
			continue
		}
		entries, err := m.FetchEntries(fs, true)
		if err != nil {
			return paths, bytes, err
		}
		for _, e := range entries {
			if e.Status() != iceberg.EntryStatusADDED {
				continue
			}
			df := e.DataFile()
			paths = append(paths, df.FilePath())
			bytes += df.FileSizeBytes()
		}
	}
	return paths, bytes, nil
}

// loadOrCreate loads the table, creating it (and checking it is ours) as
// needed.
func (s *Sink) loadOrCreate(ctx context.Context, name, original string) (*table.Table, error) {
	ident := append(slices.Clone(s.ns), name)
	tbl, err := s.cat.LoadTable(ctx, ident)
	if errors.Is(err, catalog.ErrNoSuchTable) {
		tbl, err = s.createTable(ctx, ident, original)
		if errors.Is(err, catalog.ErrTableAlreadyExists) {
			tbl, err = s.cat.LoadTable(ctx, ident)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load table %s: %w", strings.Join(ident, "."), err)
	}
	if got, ok := tbl.Properties()[PropOriginalName]; ok && got != original {
		return nil, fmt.Errorf("table %s holds CDC table %q, not %q", strings.Join(ident, "."), got, original)
	}
	return s.wrap(tbl), nil
}

// wrap rebinds a loaded table to the sink's catalog (so commits go through
// the sink's catalog wrapper) and applies Config.WrapIO to its FileIO.
func (s *Sink) wrap(tbl *table.Table) *table.Table {
	if s.cfg.WrapIO == nil {
		return table.New(tbl.Identifier(), tbl.Metadata(), tbl.MetadataLocation(), tbl.FS, s.cat)
	}
	inner := tbl.FS
	wrapped := func(ctx context.Context) (icebergio.IO, error) {
		fs, err := inner(ctx)
		if err != nil {
			return nil, err
		}
		return s.cfg.WrapIO(fs), nil
	}
	return table.New(tbl.Identifier(), tbl.Metadata(), tbl.MetadataLocation(), wrapped, s.cat)
}

// dictColumnPrefix is iceberg-go's per-column switch for Parquet dictionary
// encoding (write.parquet.dict-encoding-enabled.column.<name>).
const dictColumnPrefix = "write.parquet.dict-encoding-enabled.column."

func (s *Sink) createTable(ctx context.Context, ident table.Identifier, original string) (*table.Table, error) {
	sc := ChangelogSchema()
	spec, err := changelogSpec(sc)
	if err != nil {
		return nil, err
	}
	order, err := changelogSortOrder()
	if err != nil {
		return nil, err
	}
	props := iceberg.Properties{
		PropOriginalName:                  original,
		table.ParquetCompressionKey:       "zstd",
		table.WriteTargetFileSizeBytesKey: strconv.FormatInt(s.cfg.TargetFileSizeBytes, 10),
		table.CommitNumRetriesKey:         strconv.Itoa(s.cfg.CommitRetries),
	}
	// Row images and row ids are nearly all distinct: a dictionary for them
	// costs CPU on every flush and is then abandoned for plain encoding.
	for _, col := range []string{"before", "after", "row_id"} {
		props[dictColumnPrefix+col] = "false"
	}
	maps.Copy(props, s.cfg.TableProperties)
	tbl, err := s.cat.CreateTable(ctx, ident, sc,
		catalog.WithPartitionSpec(&spec),
		catalog.WithSortOrder(order),
		catalog.WithProperties(props))
	if err != nil {
		return nil, fmt.Errorf("create table: %w", err)
	}
	s.log.Info("iceberg table created", "table", strings.Join(ident, "."), "cdc_table", original, "location", tbl.Location())
	return tbl, nil
}

// eachTable loads every table of the namespace and calls fn with its stored
// watermarks.
func (s *Sink) eachTable(ctx context.Context, fn func(table.Identifier, *table.Table, map[string]sink.Watermark) error) error {
	idents, err := s.listTables(ctx)
	if err != nil {
		return err
	}
	for _, ident := range idents {
		tbl, err := s.cat.LoadTable(ctx, ident)
		if err != nil {
			return fmt.Errorf("iceberg: load table %s: %w", strings.Join(ident, "."), err)
		}
		wm, err := watermarksFromProps(tbl.Properties())
		if err != nil {
			return fmt.Errorf("iceberg: table %s: %w", strings.Join(ident, "."), err)
		}
		if err := fn(ident, tbl, wm); err != nil {
			return err
		}
	}
	return nil
}

// Watermarks implements sink.Sink: per source, the highest watermark stored
// in any table of the namespace.
func (s *Sink) Watermarks(ctx context.Context) (map[string]sink.Watermark, error) {
	out := make(map[string]sink.Watermark)
	err := s.eachTable(ctx, func(_ table.Identifier, _ *table.Table, wm map[string]sink.Watermark) error {
		for src, w := range wm {
			sink.MergeWatermark(out, src, w)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Sink) listTables(ctx context.Context) ([]table.Identifier, error) {
	var out []table.Identifier
	for ident, err := range s.cat.ListTables(ctx, s.ns) {
		if err != nil {
			return nil, fmt.Errorf("iceberg: list tables of %q: %w", s.cfg.Namespace, err)
		}
		out = append(out, ident)
	}
	slices.SortFunc(out, func(a, b table.Identifier) int { return strings.Compare(strings.Join(a, "."), strings.Join(b, ".")) })
	return out, nil
}

type watermarkJSON struct {
	BatchSeq uint64 `json:"batch_seq"`
	EntrySeq uint64 `json:"entry_seq"`
}

func toJSONWatermarks(m map[string]sink.Watermark) map[string]watermarkJSON {
	out := make(map[string]watermarkJSON, len(m))
	for src, w := range m {
		out[src] = watermarkJSON{BatchSeq: w.BatchSeq, EntrySeq: w.EntrySeq}
	}
	return out
}

func encodeWatermark(w sink.Watermark) string {
	b, _ := json.Marshal(watermarkJSON{BatchSeq: w.BatchSeq, EntrySeq: w.EntrySeq}) // cannot fail
	return string(b)
}

// watermarksFromProps decodes the per-source watermark properties of a table.
func watermarksFromProps(props iceberg.Properties) (map[string]sink.Watermark, error) {
	out := make(map[string]sink.Watermark)
	for k, v := range props {
		src, ok := strings.CutPrefix(k, PropWatermarkPrefix)
		if !ok {
			continue
		}
		var w watermarkJSON
		if err := json.Unmarshal([]byte(v), &w); err != nil {
			return nil, fmt.Errorf("property %s: %w", k, err)
		}
		out[src] = sink.Watermark{BatchSeq: w.BatchSeq, EntrySeq: w.EntrySeq}
	}
	return out, nil
}
