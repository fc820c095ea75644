// Package iceberg is the production sink: it commits the server's flushes to
// Apache Iceberg tables (Parquet with zstd) through github.com/apache/iceberg-go
// and keeps those tables healthy while they grow.
//
// Staging and commits (stage.go, commit.go): Stage writes a flush's rows as
// sorted data files that no snapshot references; CommitStaged adds the staged
// files of each table in one snapshot, with the watermarks of the sources
// that wrote rows to it, so a server that stages when memory needs room and
// commits once per interval gives each table one snapshot per interval.
//
// Watermarks: a table holds, per source that wrote to it, a table property
// "lakehouse.watermark.<source id>" = {"batch_seq":N,"entry_seq":M}, set in
// the same transaction as the rows (table properties survive snapshot
// expiry). Rows at or below their source's watermark are not staged, and a
// staged part the watermarks already cover is not committed again.
// Sink.Watermarks is the maximum over the namespace's tables. Each snapshot
// summary also records the commit id, trigger, row counts and watermarks.
//
// Maintenance (maintain.go, compact.go): manifest merging and metadata-file
// cleanup are table properties applied on every commit; Maintain expires
// snapshots, compacts small files with a sorted merge, and removes orphan
// files. Maintenance and ingest commits of a table share its commit lock,
// so they never conflict inside one process; different tables commit in
// parallel (commitparallel.go).
//
// Failures: a failed commit leaves no snapshot referencing its files (they
// become orphans for cleanup). Commit conflicts are replayed by iceberg-go
// (commit.retry.num-retries) and then retried by the sink after a reload.
// Every write is checked to hold all its rows, because iceberg-go v0.7.0 can
// drop a data-file write error (ErrIncompleteWrite).
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
	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/dot-do/lakehouse-rpc/internal/offheap"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// Sink commits flushes to Iceberg tables. It implements sink.Stager and
// sink.HealthReporter. Stages and commits of one Sink are serialised;
// several Sinks (or processes) may share a catalog as long as each source is
// written by one of them at a time.
type Sink struct {
	cfg    Config
	cat    catalog.Catalog
	s3cfg  *aws.Config  // shared by every S3 IO (sharedS3Config); nil without S3
	s3conn *connTracker // its client's connections, closed by Close; may be nil
	ns     table.Identifier
	log    *slog.Logger
	schema *arrow.Schema

	mu     sync.Mutex // serialises Stage, CommitStaged and Commit
	closed bool
	// stageTables caches the tables as Stage loaded them, until the next
	// commit (guarded by mu; see stageTable).
	stageTables map[string]*table.Table
	// stageMirrorTables caches the mirror tables as Stage loaded them for
	// their watermarks, by CDC table name (nil: no mirror yet), until the
	// next commit (as stageTables). The commit starts from both caches'
	// tables (commitbase.go).
	stageMirrorTables map[string]*table.Table
	// mirrorGroups holds each table's mirror parts staged since the last
	// CommitStaged (guarded by mu; mirrorgroup.go).
	mirrorGroups map[string]*mirrorGroup

	// commitLocks serialise the catalog commits of ingest and
	// maintenance per table (commitlock.go).
	commitLocks tableLocks

	stagedMu sync.Mutex
	// staged holds the paths of data files written by Stage and not yet
	// committed: orphan cleanup must never remove them.
	staged map[string]struct{}

	maint maintState // last maintenance per table, and its counters

	mirror mirrorState // mirror tables' indexes and counters

	committer     committerState  // the elected committer (committer.go)
	passes        commitPasses    // commit passes running, for the background work that yields to them
	mirrorCompact mirrorCompactor // tables for RunMirrorCompaction

	// afterMirrorDecided, set by this package's tests only, is called when
	// a mirror commit has been decided, before its schema commit.
	afterMirrorDecided func(table string)
	// afterOffHeapMerge, set by this package's tests only, is called with
	// an off-heap merge's allocator figures and the bytes it still had
	// handed out when it was closed.
	afterOffHeapMerge func(st offheap.Stats, outstanding int64)
}

var (
	_ sink.Stager         = (*Sink)(nil)
	_ sink.CommitMarker   = (*Sink)(nil)
	_ sink.HealthReporter = (*Sink)(nil)
)

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
	s3cfg, s3conn, err := sharedS3Config(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	cat, err := openCatalog(ctx, &cfg, s3cfg)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:       cfg,
		cat:       cat,
		s3cfg:     s3cfg,
		s3conn:    s3conn,
		ns:        catalog.ToIdentifier(cfg.Namespace),
		log:       cfg.Logger.With("component", "iceberg-sink"),
		schema:    asc,
		staged:    make(map[string]struct{}),
		committer: newCommitterState(),
	}
	s.maint.init(cfg.MemoryLimit)
	s.mirror.indexes = make(map[string]*mirrorIndex)
	s.commitLocks.ingestWait = newIngestWait()
	s.passes.init(s.mirrorCompact.passesEnded)
	s.mirrorCompact.init(&s.passes, s.cfg.MirrorCompactDeleteFiles, s.cfg.MirrorScanBudget)
	if oc, ok := cat.(*ownedDBCatalog); ok {
		if err := checkEmbeddedLocations(ctx, &cfg, oc.db); err != nil {
			_ = s.closeCatalog()
			return nil, err
		}
	}
	if err := s.ensureNamespace(ctx); err != nil {
		_ = s.closeCatalog()
		return nil, err
	}
	// The mirror namespace is created with the first mirror table
	// (loadOrCreateMirror), not here: a sink opened to maintain or read a
	// catalog must not add a namespace to it.
	if cfg.ElectedCommitter {
		if err := s.startCommitter(ctx); err != nil {
			_ = s.closeCatalog()
			return nil, err
		}
	}
	s.maint.govern(cfg.MemoryLimitFloor, s.log)
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
// running Commit to finish. The elected committer stops first, and its
// session's locks end: other instances take its tables at their next
// interval.
func (s *Sink) Close() error {
	s.stopCommitter()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.maint.stopGovern != nil {
		s.maint.stopGovern()
	}
	return s.closeCatalog()
}

// closeCatalog closes the catalog and the shared S3 client's connections.
func (s *Sink) closeCatalog() error {
	if s.s3conn != nil {
		defer s.s3conn.close()
	}
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

// loadOrCreate loads the table, creating it (and checking it is ours) as
// needed.
func (s *Sink) loadOrCreate(ctx context.Context, name, original string) (*table.Table, error) {
	return s.loadOrCreateFrom(ctx, name, original, nil)
}

// loadOrCreateFrom is loadOrCreate, using base (a table loadOrCreate
// returned) instead of a load when its metadata is still the table's
// current one (stillCurrent).
func (s *Sink) loadOrCreateFrom(ctx context.Context, name, original string, base *table.Table) (*table.Table, error) {
	ident := append(slices.Clone(s.ns), name)
	if s.stillCurrent(ctx, ident, base) {
		return base, nil
	}
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
// the sink's catalog wrapper), binds its FileIO's directory walks to the
// caller's context (bindWalkContext) and applies Config.WrapIO.
func (s *Sink) wrap(tbl *table.Table) *table.Table {
	inner := tbl.FS
	wrapped := func(ctx context.Context) (icebergio.IO, error) {
		fs, err := inner(s.ioContext(ctx))
		if err != nil {
			return nil, err
		}
		bindWalkContext(ctx, fs)
		if s.cfg.WrapIO != nil {
			fs = s.cfg.WrapIO(fs)
		}
		return fs, nil
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
	maps.Copy(props, s.changelogWriteProps())
	maps.Copy(props, s.managedProps())
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
