package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/aws/aws-sdk-go-v2/aws"

	// Catalog and storage back ends that register themselves.
	_ "github.com/apache/iceberg-go/catalog/glue"
	_ "github.com/apache/iceberg-go/catalog/rest"
	_ "github.com/apache/iceberg-go/io/gocloud/azure"
	_ "github.com/apache/iceberg-go/io/gocloud/gcs"
	_ "github.com/apache/iceberg-go/io/gocloud/s3"

	// database/sql drivers for the SQL catalog: pure Go, no cgo.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// Catalog types accepted in Config.CatalogType.
const (
	// CatalogSQL is iceberg-go's SQL catalog: SQLite by default, PostgreSQL
	// when CatalogURI is a postgres:// DSN.
	CatalogSQL = "sql"
	// CatalogREST is an Iceberg REST catalog (Polaris, Nessie, Lakekeeper,
	// Unity, Gravitino...).
	CatalogREST = "rest"
	// CatalogGlue is the AWS Glue Data Catalog.
	CatalogGlue = "glue"
)

// Defaults of Config.
const (
	DefaultNamespace           = "cdc"
	DefaultCatalogName         = "lakehouse"
	DefaultTargetFileSizeBytes = 128 << 20 // 128 MiB
	DefaultCommitRetries       = 4
	DefaultCommitAttempts      = 3
	// DefaultCommitterInterval is Config.CommitterInterval's default.
	DefaultCommitterInterval = 30 * time.Second
	// DefaultCommitParallelism is Config.CommitParallelism's default: 0,
	// half the CPUs the process may use (GOMAXPROCS), at least 1 and at
	// most MaxAutoCommitParallelism (AutoCommitParallelism). A table's
	// commit mostly computes (its mirror's records, Parquet and zstd),
	// beside ingest, so commits in parallel take CPU from the write-ahead
	// log's writer and the acks. On the reference machine (2 cores, 80k
	// keyed entries/s, four tables with mirrors) a commit took 470 ms one
	// table at a time, 345 ms two and 300 ms four at a time, while the
	// acks' p99 went from about 40 ms to 85 ms and 125 ms, and W1's at
	// 150k entries/s from 14 ms to 32 ms; the mirror's freshness was the
	// same at 1 and 2 (the smallest table goes first either way). So two
	// cores commit one table at a time, and larger machines use half
	// their cores.
	DefaultCommitParallelism = 0
	// MaxAutoCommitParallelism caps the automatic CommitParallelism.
	MaxAutoCommitParallelism = 4
	// MaxCommitParallelism bounds Config.CommitParallelism: each table in
	// flight holds its commit's manifests and a catalog connection.
	MaxCommitParallelism = 64
)

// Table and snapshot property keys written by the sink.
const (
	// PropOriginalName holds the CDC table name as sent (before sanitising).
	PropOriginalName = "lakehouse.cdc.table"
	// PropWatermarkPrefix prefixes the per-source watermark table
	// properties: "lakehouse.watermark.<source id>" holds
	// {"batch_seq":N,"entry_seq":M}. One key per source, so that concurrent
	// writers serving different sources never overwrite each other's
	// watermarks when iceberg-go replays a conflicting commit.
	PropWatermarkPrefix = "lakehouse.watermark."
	// Snapshot summary keys of every append made by the sink.
	SummaryFlushID    = "lakehouse.flush-id"
	SummaryTrigger    = "lakehouse.trigger"
	SummaryRows       = "lakehouse.rows"
	SummarySkipped    = "lakehouse.rows-skipped"
	SummaryWatermarks = "lakehouse.watermarks"
	// Summary keys of an elected committer's snapshot (committer.go): the
	// number of published parts it holds and the instances that staged
	// them (comma-separated, sorted).
	SummaryParts     = "lakehouse.parts"
	SummaryInstances = "lakehouse.instances"
	// SummaryMaintenance marks a maintenance snapshot (a compaction), which
	// keeps the table's rows as they were; its value names the kind.
	SummaryMaintenance = "lakehouse.maintenance"
)

// Config configures the Iceberg sink. The zero value, with DataDir set, is a
// working embedded set-up: a SQLite catalog in <DataDir>/catalog.db and a
// warehouse in file://<DataDir>/warehouse.
type Config struct {
	// DataDir is the local data directory, used for the default SQLite
	// catalog file and the default warehouse. Required unless both
	// CatalogURI (or a non-SQL catalog) and Warehouse are given.
	DataDir string

	// CatalogType is "sql" (default), "rest" or "glue".
	CatalogType string
	// CatalogName is the catalog's name (the SQL catalog's catalog_name
	// column). Default "lakehouse".
	CatalogName string
	// CatalogURI is, for "sql", a database DSN: empty for SQLite at
	// <DataDir>/catalog.db, a file path or "file:" DSN for another SQLite
	// file, or a "postgres://" / "postgresql://" DSN for PostgreSQL (pgx
	// driver). For "rest" it is the REST endpoint. Unused for "glue".
	CatalogURI string
	// SQLDriver and SQLDialect override the database/sql driver name and
	// the bun dialect ("sqlite", "postgres", "mysql"...) of the SQL catalog,
	// for a driver the program registers itself.
	SQLDriver  string
	SQLDialect string
	// Credential ("client_id:client_secret") and Token are REST catalog
	// credentials.
	Credential string
	Token      string

	// Warehouse is the warehouse location URL: file://, mem://, s3://,
	// gs://, azblob://... Default file://<DataDir>/warehouse.
	Warehouse string
	// Namespace is the Iceberg namespace of the CDC tables. Default "cdc".
	Namespace string
	// TargetFileSizeBytes is the target Parquet data file size (table
	// property write.target-file-size-bytes). Default 128 MiB.
	TargetFileSizeBytes int64
	// Properties are extra catalog and FileIO properties, passed as they
	// are: for example s3.endpoint, s3.region, s3.access-key-id,
	// s3.secret-access-key, s3.force-virtual-addressing ("false" gives
	// path-style requests, the default when s3.endpoint is set),
	// glue.region, or REST options such as prefix or scope.
	Properties map[string]string
	// TableProperties are extra properties set on tables the sink creates.
	TableProperties map[string]string

	// CommitRetries is the number of optimistic-commit retries iceberg-go
	// makes on a conflict (table property commit.retry.num-retries of the
	// tables the sink creates), replaying the append on the new table state
	// without rewriting data files. Default 4; negative means 0.
	CommitRetries int
	// CommitAttempts bounds the sink's own attempts per table when a commit
	// still conflicts: each reloads the table, re-reads its watermarks and
	// rewrites the rows. Default 3.
	CommitAttempts int
	// CommitParallelism is how many tables one commit (CommitStaged,
	// Commit) works on at once: each table's changelog commit and then its
	// mirror's stay in order, different tables commit in parallel, so a
	// commit takes about as long as its slowest table rather than the sum
	// of all (commitparallel.go). 0 (DefaultCommitParallelism):
	// AutoCommitParallelism; 1 commits the tables one after the other,
	// the smallest first.
	CommitParallelism int

	// Maintenance configures the online table maintenance (see
	// MaintenanceConfig).
	Maintenance MaintenanceConfig

	// Mirror keeps, beside each changelog table, a mirror table holding
	// the current state of the CDC table (see mirror.go and
	// docs/mirror.md). Off in the zero Config; `lakehouse serve` turns it
	// on by default (and runs RunMirrorCompaction beside it).
	Mirror bool
	// MirrorNamespace is the namespace of the mirror tables. Default: the
	// CDC namespace + DefaultMirrorNamespaceSuffix ("cdc_current").
	MirrorNamespace string
	// MirrorNestedAsJSON stores nested JSON objects and arrays of mirror
	// rows as JSON text columns instead of inferring struct and list
	// columns.
	MirrorNestedAsJSON bool
	// MirrorInferTimestamps types a new mirror column timestamptz when its
	// first value is an RFC 3339 string (with a zone, at most microsecond
	// precision); later strings that are not go to _extra. Off: such
	// strings are string columns.
	MirrorInferTimestamps bool
	// MirrorSchemas pins the schemas of mirror tables, by CDC table name
	// (see MirrorTableSchema and ParseMirrorSchemas).
	MirrorSchemas map[string]MirrorTableSchema
	// MirrorExclude lists the CDC tables that get no mirror table with
	// Mirror on: names or path.Match patterns ("log_*"), matched against
	// the table name as sent. See mirrorExcluded.
	MirrorExclude []string
	// MirrorCompactDeleteFiles is the number of delete files of a mirror
	// table partition at which the background mirror compaction
	// (RunMirrorCompaction) rewrites that partition, applying and dropping
	// its equality deletes. Default DefaultMirrorCompactDeleteFiles;
	// negative turns mirror compaction off.
	MirrorCompactDeleteFiles int
	// MirrorTombstoneRetention is how long a mirror table keeps the
	// tombstone of a deleted key, by event time relative to the newest
	// event time the table holds: a change older than a forgotten tombstone
	// brings its row back. Default DefaultMirrorTombstoneRetention;
	// negative keeps tombstones forever.
	MirrorTombstoneRetention time.Duration
	// MirrorScanBudget is the other compaction trigger: a partition is
	// compacted once a scan of it would apply more than this many delete
	// rows (each delete file's rows counted once per data file it applies
	// to; see mirrorcompact.go). Default DefaultMirrorScanBudget; negative
	// turns this trigger off.
	MirrorScanBudget int64
	// MirrorPartitionBuckets partitions new mirror tables by
	// bucket[N](row_id), so that equality deletes and compaction work per
	// partition. Default DefaultMirrorPartitionBuckets; negative creates
	// unpartitioned mirrors. Existing mirrors keep their partitioning.
	MirrorPartitionBuckets int

	// FenceIdleTxTimeout, when > 0, makes PostgreSQL end a catalog
	// transaction idle for that long (idle_in_transaction_session_timeout
	// on the catalog's connections): a paused instance holding lease rows
	// in a fenced commit then blocks takeovers for at most that long
	// (fence.go, docs/scale-out.md). Set it to the lease TTL.
	FenceIdleTxTimeout time.Duration
	// ExclusiveMaintenance runs each table's maintenance pass under a
	// PostgreSQL advisory lock of the catalog's database, so that among
	// several instances on one catalog only one maintains a table at a
	// time; the others skip it (maintlock.go). Needs the SQL catalog on
	// PostgreSQL.
	ExclusiveMaintenance bool
	// ElectedCommitter (multi-instance mode, committer.go): CommitStaged
	// publishes the staged parts in the catalog's PostgreSQL database and
	// waits until one elected committer per table (a PostgreSQL advisory
	// lock) has committed them, all instances' parts of a table in one
	// snapshot per CommitterInterval. Needs the SQL catalog on PostgreSQL
	// and InstanceID. With Mirror the committer commits the mirror tables
	// too (committermirror.go).
	ElectedCommitter bool
	// CommitterInterval is how often the elected committer commits a
	// table. Default DefaultCommitterInterval; give the server's commit
	// interval.
	CommitterInterval time.Duration
	// InstanceID names this instance (its lease owner) in the parts it
	// publishes. Required with ElectedCommitter.
	InstanceID string

	// MemoryLimit is the process's soft memory limit in bytes, as set
	// with runtime/debug.SetMemoryLimit. Compaction merges hold their
	// buffers off the Go heap (internal/offheap), where the runtime does
	// not count them: while they do, the sink lowers the runtime's limit
	// by as much (down to half of MemoryLimit). 0: the sink leaves the
	// runtime's limit alone.
	MemoryLimit int64
	// MemoryLimitFloor, when above 0 and below MemoryLimit, makes the sink
	// hold the process's soft limit between it and MemoryLimit by what the
	// garbage collector costs (offheap.Budget.Govern): at the floor while
	// collections are cheap, rising while they take a sustained share of
	// the CPU. 0: the limit stays at MemoryLimit.
	MemoryLimitFloor int64

	// Logger receives the sink's logs. Default slog.Default().
	Logger *slog.Logger

	// WrapIO, when set, wraps the FileIO through which the sink writes and
	// reads data files and manifests (fault injection in tests, metering).
	// Table metadata files are still written by the catalog's own IO.
	WrapIO func(icebergio.IO) icebergio.IO
	// BeforeTableCommit, when set, is called with the original table name
	// before each table's rows are written and committed; an error it
	// returns fails the Commit at that table (fault injection in tests).
	// It and BeforeMirrorCommit are called from several goroutines at once
	// when CommitParallelism > 1 (each table's calls from one).
	BeforeTableCommit func(table string) error
	// BeforeRewriteCommit, when set, is called with the table name after a
	// compaction has written its files and before it commits them; an
	// error abandons the compaction (fault injection in tests).
	BeforeRewriteCommit func(table string) error
	// BeforeMirrorCommit, when set, is called with the original table name
	// after the mirror commit of that table has written its files and
	// before it commits them (after the changelog's commit); an error fails
	// the Commit there (fault injection in tests).
	BeforeMirrorCommit func(table string) error
	// AroundCatalogCommit, when set, wraps each commit attempt of the SQL
	// catalog: it is called with the table and the attempt, and what it
	// returns is the attempt's error (fault injection in tests: a reply
	// lost after the catalog applied the commit, a stop in the middle of
	// one).
	AroundCatalogCommit func(table table.Identifier, commit func() error) error
}

// withDefaults returns cfg with every default filled in.
func (cfg Config) withDefaults() (Config, error) {
	if err := ValidateMirrorExclude(cfg.MirrorExclude); err != nil {
		return cfg, fmt.Errorf("iceberg: %w", err)
	}
	if cfg.CatalogType == "" {
		cfg.CatalogType = CatalogSQL
	}
	cfg.CatalogType = strings.ToLower(cfg.CatalogType)
	if cfg.CatalogName == "" {
		cfg.CatalogName = DefaultCatalogName
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.TargetFileSizeBytes <= 0 {
		cfg.TargetFileSizeBytes = DefaultTargetFileSizeBytes
	}
	if cfg.CommitRetries == 0 {
		cfg.CommitRetries = DefaultCommitRetries
	} else if cfg.CommitRetries < 0 {
		cfg.CommitRetries = 0
	}
	if cfg.MemoryLimitFloor < 0 || cfg.MemoryLimitFloor > 0 && cfg.MemoryLimit > 0 && cfg.MemoryLimitFloor > cfg.MemoryLimit {
		return cfg, fmt.Errorf("iceberg: Config.MemoryLimitFloor %d: want 0 (none) or bytes up to Config.MemoryLimit (%d)", cfg.MemoryLimitFloor, cfg.MemoryLimit)
	}
	if cfg.CommitAttempts <= 0 {
		cfg.CommitAttempts = DefaultCommitAttempts
	}
	switch {
	case cfg.CommitParallelism == 0:
		cfg.CommitParallelism = AutoCommitParallelism()
	case cfg.CommitParallelism < 0 || cfg.CommitParallelism > MaxCommitParallelism:
		return cfg, fmt.Errorf("iceberg: Config.CommitParallelism %d: want 0 (automatic) or 1 to %d tables at once", cfg.CommitParallelism, MaxCommitParallelism)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	if err = cfg.mirrorDefaults(); err != nil {
		return cfg, err
	}
	if cfg.Maintenance, err = cfg.Maintenance.withDefaults(); err != nil {
		return cfg, err
	}
	needDir := cfg.Warehouse == "" && cfg.CatalogType != CatalogREST ||
		cfg.CatalogType == CatalogSQL && cfg.CatalogURI == ""
	if needDir {
		if cfg.DataDir == "" {
			return cfg, errors.New("iceberg: Config.DataDir is required for the default catalog or warehouse")
		}
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return cfg, fmt.Errorf("iceberg: data dir: %w", err)
		}
		cfg.DataDir = abs
	}
	if cfg.Warehouse == "" && cfg.CatalogType != CatalogREST {
		cfg.Warehouse = (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(cfg.DataDir, "warehouse"))}).String()
	}
	switch cfg.CatalogType {
	case CatalogSQL, CatalogREST, CatalogGlue:
	default:
		return cfg, fmt.Errorf("iceberg: unknown catalog type %q (want sql, rest or glue)", cfg.CatalogType)
	}
	if cfg.ExclusiveMaintenance && (cfg.CatalogType != CatalogSQL || !isPostgresDSN(cfg.CatalogURI)) {
		return cfg, errors.New("iceberg: Config.ExclusiveMaintenance needs the SQL catalog on PostgreSQL (a postgres:// CatalogURI)")
	}
	if cfg.ElectedCommitter {
		if err := cfg.committerDefaults(); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// committerDefaults checks and completes the elected committer's options.
func (cfg *Config) committerDefaults() error {
	if cfg.CatalogType != CatalogSQL || !isPostgresDSN(cfg.CatalogURI) {
		return errors.New("iceberg: Config.ElectedCommitter needs the SQL catalog on PostgreSQL (a postgres:// CatalogURI)")
	}
	if cfg.InstanceID == "" {
		return errors.New("iceberg: Config.ElectedCommitter needs Config.InstanceID")
	}
	if cfg.CommitterInterval <= 0 {
		cfg.CommitterInterval = DefaultCommitterInterval
	}
	return nil
}

func isPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// catalogProps returns the properties handed to the catalog (and through it
// to the FileIO of every table).
func (cfg *Config) catalogProps() iceberg.Properties {
	p := iceberg.Properties{}
	maps.Copy(p, cfg.Properties)
	if cfg.Warehouse != "" {
		p["warehouse"] = cfg.Warehouse
	}
	return p
}

// openCatalog opens the configured catalog.
// The SQL catalog opens its metadata IOs with s3cfg (sharedS3Config).
func openCatalog(ctx context.Context, cfg *Config, s3cfg *aws.Config) (catalog.Catalog, error) {
	props := cfg.catalogProps()
	switch cfg.CatalogType {
	case CatalogSQL:
		driver, dialect, dsn, err := sqlTarget(cfg)
		if err != nil {
			return nil, err
		}
		if cfg.CatalogURI == "" {
			if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
				return nil, fmt.Errorf("iceberg: data dir: %w", err)
			}
		}
		if strings.HasPrefix(cfg.Warehouse, "file://") {
			u, err := url.Parse(cfg.Warehouse)
			if err != nil {
				return nil, fmt.Errorf("iceberg: warehouse %q: %w", cfg.Warehouse, err)
			}
			if err := os.MkdirAll(filepath.FromSlash(u.Path), 0o755); err != nil {
				return nil, fmt.Errorf("iceberg: warehouse: %w", err)
			}
		}
		db, err := openSQL(driver, dsn, cfg.FenceIdleTxTimeout)
		if err != nil {
			return nil, fmt.Errorf("iceberg: open %s catalog database: %w", dialect, err)
		}
		if err := db.PingContext(ctx); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("iceberg: open %s catalog database: %w", dialect, err)
		}
		unlock, err := lockCatalogInit(ctx, db, dialect)
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("iceberg: open sql catalog: %w", err)
		}
		cat, err := sqlcat.NewCatalog(cfg.CatalogName, db, sqlcat.SupportedDialect(dialect), props)
		unlock()
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("iceberg: open sql catalog: %w", err)
		}
		oc := &ownedDBCatalog{Catalog: cat, db: db, props: props, s3cfg: s3cfg, aroundCommit: cfg.AroundCatalogCommit}
		if dialect == string(sqlcat.SQLite) {
			oc.writeMu = new(sync.Mutex)
		}
		return oc, nil
	case CatalogREST:
		if cfg.CatalogURI == "" {
			return nil, errors.New("iceberg: the rest catalog needs Config.CatalogURI")
		}
		props["type"] = CatalogREST
		props["uri"] = cfg.CatalogURI
		if cfg.Credential != "" {
			props["credential"] = cfg.Credential
		}
		if cfg.Token != "" {
			props["token"] = cfg.Token
		}
	case CatalogGlue:
		props["type"] = CatalogGlue
	}
	cat, err := catalog.Load(ctx, cfg.CatalogName, props)
	if err != nil {
		return nil, fmt.Errorf("iceberg: open %s catalog: %w", cfg.CatalogType, err)
	}
	return cat, nil
}

// openSQL opens the SQL catalog's database. PostgreSQL through pgx gets the
// fencing connector (fence.go), which costs nothing unless a commit carries
// fencing claims.
func openSQL(driver, dsn string, idleTx time.Duration) (*sql.DB, error) {
	if driver != "pgx" {
		return sql.Open(driver, dsn)
	}
	c, err := newFencedConnector(dsn, idleTx)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

// sqlTarget resolves the database/sql driver, bun dialect and DSN of the SQL
// catalog.
func sqlTarget(cfg *Config) (driver, dialect, dsn string, err error) {
	dsn = cfg.CatalogURI
	switch {
	case dsn == "":
		dsn = sqliteDSN(filepath.Join(cfg.DataDir, "catalog.db"))
		driver, dialect = "sqlite", string(sqlcat.SQLite)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver, dialect = "pgx", string(sqlcat.Postgres)
	case strings.HasPrefix(dsn, "file:"):
		driver, dialect = "sqlite", string(sqlcat.SQLite)
	default:
		if cfg.SQLDriver == "" && cfg.SQLDialect == "" {
			dsn = sqliteDSN(dsn)
		}
		driver, dialect = "sqlite", string(sqlcat.SQLite)
	}
	if cfg.SQLDriver != "" {
		driver = cfg.SQLDriver
	}
	if cfg.SQLDialect != "" {
		dialect = cfg.SQLDialect
	}
	return driver, dialect, dsn, nil
}

// sqliteDSN is the modernc.org/sqlite DSN of a catalog file: WAL and a busy
// timeout on every pooled connection, as iceberg-go's SQL catalog advises.
func sqliteDSN(path string) string {
	return "file:" + filepath.ToSlash(path) + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
}

// ownedDBCatalog is a SQL catalog whose database handle the sink opened and
// must close.
//
// On SQLite, catalog writes are serialised inside the process and retried
// when the database is busy: a write transaction that started from an older
// snapshot of the WAL-mode database fails at once with SQLITE_BUSY_SNAPSHOT
// (517), which busy_timeout does not cover, so two writers of one process
// (an ingest commit creating a table while maintenance commits another)
// could fail a flush. Another process (lakehouse maintain) can still make a
// write busy; those are retried, which is safe because a failed catalog
// write changed nothing.
type ownedDBCatalog struct {
	*sqlcat.Catalog
	db      *sql.DB
	props   iceberg.Properties // the catalog's, for the metadata IOs (commitsql.go)
	writeMu *sync.Mutex        // nil unless SQLite
	commits commitCounter
	s3cfg   *aws.Config // for the metadata IOs (sharedS3Config); nil without S3
	// aroundCommit is Config.AroundCatalogCommit.
	aroundCommit func(table.Identifier, func() error) error
}

// sqliteBusyRetries bounds the retries of a busy SQLite catalog write.
const sqliteBusyRetries = 8

// write runs one catalog write under the SQLite rules above.
func (c *ownedDBCatalog) write(ctx context.Context, f func() error) error {
	if c.writeMu == nil {
		return f()
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	delay := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || attempt == sqliteBusyRetries || !isSQLiteBusy(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// isSQLiteBusy reports SQLITE_BUSY (5) and its extended codes such as
// SQLITE_BUSY_SNAPSHOT (517), from modernc.org/sqlite's error text.
func isSQLiteBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "database is locked") || strings.Contains(msg, "SQLITE_BUSY")
}

// CommitTable commits through the SQL catalog. iceberg-go's SQL catalog
// reports a requirement that no longer holds (another writer committed to
// the table in between) as a plain error; it is returned wrapped in
// table.ErrCommitFailed, as the REST catalog does with HTTP 409, so that
// iceberg-go's optimistic-commit retry replays the commit. Nothing was
// written to the catalog when a requirement fails, so the retry is safe.
// Only the lower-case spelling is matched: iceberg-go spells the schema and
// field-id requirements "Requirement failed", and a replay of a schema
// update onto a schema another writer changed would drop that writer's
// columns; the mirror decides those again instead (isRequirementFailure).
func (c *ownedDBCatalog) CommitTable(ctx context.Context, ident table.Identifier, reqs []table.Requirement, updates []table.Update) (table.Metadata, string, error) {
	var (
		meta table.Metadata
		loc  string
	)
	ctx = withS3Config(ctx, c.s3cfg)
	if err := checkMirrorBase(ctx, c.Catalog, ident); err != nil {
		c.commits.record(err)
		return nil, "", err
	}
	commit := func() (err error) {
		if base := takeCommitBase(ctx, ident); base != nil {
			var done bool
			if meta, loc, done, err = c.commitOnBase(ctx, ident, base, reqs, updates); done {
				return err
			}
		}
		meta, loc, err = c.Catalog.CommitTable(ctx, ident, reqs, updates)
		return err
	}
	if c.aroundCommit != nil {
		inner := commit
		commit = func() error { return c.aroundCommit(ident, inner) }
	}
	err := c.write(ctx, commit)
	if err != nil && !errors.Is(err, table.ErrCommitFailed) && strings.Contains(err.Error(), "requirement failed") {
		err = fmt.Errorf("%w: %w", table.ErrCommitFailed, err)
	}
	c.commits.record(err)
	return meta, loc, err
}

// CreateTable creates a table under the SQLite write rules.
func (c *ownedDBCatalog) CreateTable(ctx context.Context, ident table.Identifier, sc *iceberg.Schema, opts ...catalog.CreateTableOpt) (*table.Table, error) {
	ctx = withS3Config(ctx, c.s3cfg)
	var tbl *table.Table
	err := c.write(ctx, func() (err error) {
		tbl, err = c.Catalog.CreateTable(ctx, ident, sc, opts...)
		return err
	})
	return tbl, err
}

// LoadTable loads a table, reading its metadata with the shared S3 client.
func (c *ownedDBCatalog) LoadTable(ctx context.Context, ident table.Identifier) (*table.Table, error) {
	c.commits.loads.Add(1)
	return c.Catalog.LoadTable(withS3Config(ctx, c.s3cfg), ident)
}

// CreateNamespace creates a namespace under the SQLite write rules.
func (c *ownedDBCatalog) CreateNamespace(ctx context.Context, ns table.Identifier, props iceberg.Properties) error {
	return c.write(ctx, func() error { return c.Catalog.CreateNamespace(ctx, ns, props) })
}

// Close closes the catalog and its database handle.
func (c *ownedDBCatalog) Close() error {
	return errors.Join(c.Catalog.Close(), c.db.Close())
}

// AutoCommitParallelism is the CommitParallelism a Config without one gets
// (see DefaultCommitParallelism): half of GOMAXPROCS, at least 1 and at
// most MaxAutoCommitParallelism.
func AutoCommitParallelism() int {
	return min(max(runtime.GOMAXPROCS(0)/2, 1), MaxAutoCommitParallelism)
}
