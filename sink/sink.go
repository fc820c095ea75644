// Package sink defines what the aggregator hands to storage at each flush and
// what storage must promise in return: per-table atomic, idempotent commits
// with per-source watermarks, so that no acknowledged entry is lost and none is
// written twice, across retries, partial multi-table flushes and restarts.
package sink

import (
	"context"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Row is one entry with the identity of the batch that carried it.
type Row struct {
	SourceID  string
	ShardName string
	// BatchSeq is the server's batch sequence for the source: the client's
	// batch number for native sources, a server-assigned counter for legacy
	// (entry-sequenced) sources. Increasing per source.
	BatchSeq uint64
	// Entry's byte slices are only valid during Commit.
	codec.Entry
}

// Table is the rows of one CDC table in a flush, source by source in the
// order of their ids, each source's rows by BatchSeq then entry order.
type Table struct {
	Name string // the CDC table name as sent, not sanitised
	Rows []Row
}

// Watermark is how far a source's data is committed.
type Watermark struct {
	BatchSeq uint64 // all batches of the source with BatchSeq <= this
	EntrySeq uint64 // the highest entry sequence among them
}

// Flush is one flush of the buffer.
type Flush struct {
	ID     uint64    // the server's flush counter, for logs and audit
	Reason string    // the trigger, for example "manual" or "time_threshold"
	Time   time.Time // the flush time, stored as ingest time
	Tables []Table
	// Watermarks holds, per source, the highest batch of this flush. A sink
	// stores, with every table it commits and atomically with the rows, the
	// watermarks of the sources that wrote rows to that table.
	Watermarks map[string]Watermark
}

// Result reports a commit.
type Result struct {
	RowsWritten  int64    // rows made visible by this call
	RowsSkipped  int64    // rows found already committed (from watermarks) and not written again
	BytesWritten int64    // bytes of data files written
	Paths        []string // data files written
	Tables       int      // tables committed by this call
	// Commits describes each table commit of this call, in order, for
	// sinks that commit per table (nil otherwise).
	Commits []TableCommit
}

// TableCommit is one table's commit within a Result.
type TableCommit struct {
	Table      string        // the table name in the sink (sanitised)
	SnapshotID int64         // the snapshot it created (0: unknown)
	Rows       int64         // rows it made visible
	Duration   time.Duration // how long the commit took (catalog and metadata work)
}

// Sink is where flushed entries go.
//
// Commit must be idempotent: for each table it commits the rows, and the
// flush's watermarks, atomically; rows of a source whose BatchSeq is at or
// below the watermark the table already holds for that source are skipped.
// Retrying a flush after a partial failure (some tables committed, some not)
// or after a restart therefore neither duplicates nor loses a row. On error
// nothing of the failed table is visible.
type Sink interface {
	Commit(ctx context.Context, f *Flush) (Result, error)
	// Watermarks returns, per source, the highest watermark committed to any
	// table. A server whose local state is lost uses them to recognise
	// resent batches.
	Watermarks(ctx context.Context) (map[string]Watermark, error)
	// Close releases the sink's resources.
	Close() error
}

// MergeWatermark raises dst[source] to w where w is higher.
func MergeWatermark(dst map[string]Watermark, source string, w Watermark) {
	cur, ok := dst[source]
	if !ok || w.BatchSeq > cur.BatchSeq {
		cur.BatchSeq = w.BatchSeq
	}
	if !ok || w.EntrySeq > cur.EntrySeq {
		cur.EntrySeq = w.EntrySeq
	}
	dst[source] = cur
}

// Stager is a Sink that writes a flush's rows ahead of their commit, so that
// memory is freed as soon as the data files are written while commits follow
// a cadence of their own: a server stages whenever its buffer needs room and
// commits the staged flushes of every table together once per commit
// interval, giving each table at most one snapshot per interval however fast
// data arrives.
//
// Staged data is invisible to readers until CommitStaged. What was staged and
// never committed (a crash, a discarded stage) is left as orphan files for
// the sink's maintenance to remove; the server's write-ahead log keeps every
// batch until its commit, so a restart stages it again.
type Stager interface {
	Sink
	// Stage writes the rows of f that the tables' watermarks do not already
	// cover. The flush's byte slices are not referenced after it returns.
	Stage(ctx context.Context, f *Flush) (Staged, error)
	// CommitStaged makes the staged flushes visible: for each table, one
	// atomic commit of all their rows with the watermarks of the sources
	// that wrote rows to it. It is idempotent: a staged flush whose rows the
	// table's watermarks already cover (a commit whose outcome was lost) is
	// not committed again. On error the Staged values stay valid and the
	// call may be retried with them; tables committed before the error are
	// recognised by their watermarks.
	//
	// The flushes staged between two calls are committed together: a call
	// given one of them is given all of them (a server gives each call every
	// flush it holds staged). A Stager may keep what they share once (the
	// iceberg sink keeps a mirror's change of a key once for all of them),
	// and refuses a call given only some.
	CommitStaged(ctx context.Context, staged []Staged, c CommitInfo) (Result, error)
}

// CommitMarker is a Stager whose background work (table maintenance) steps
// aside while a commit is under way. A server marks the whole of a commit:
// the stage of what is still buffered as well as CommitStaged, since both
// are what its children wait for (their `persisted` messages). Stages that
// thresholds start between commits are not marked.
type CommitMarker interface {
	// BeginCommit marks a commit that begins; the server calls the returned
	// function, once, when it ends.
	BeginCommit() (end func())
}

// Staged is a flush written by a Stager and not yet committed.
type Staged interface {
	// StagedRows is the number of rows written (rows the watermarks already
	// covered are not counted).
	StagedRows() int64
	// StagedBytes is the size of the data written.
	StagedBytes() int64
}

// CommitInfo describes one commit of staged flushes, for the snapshot
// summaries.
type CommitInfo struct {
	ID     uint64 // the server's commit counter
	Reason string // the trigger, for example "scheduled" or ReasonManual
}

// ReasonManual is the Reason of a commit an operator or client asked for
// (a Flush request, lakehouse replay). An elected committer (the Iceberg
// sink in multi-instance mode) commits those at once; every other commit
// (scheduled, a shutdown's, a filling log's, a retry) waits for its commit
// slot, so that a table gets at most one snapshot per interval from them.
const ReasonManual = "manual"

// TableHealth is a table's size and its last maintenance pass.
type TableHealth struct {
	Name          string // the table name in the sink (sanitised)
	Snapshots     int
	DataFiles     int64
	Manifests     int
	MetadataBytes int64 // current metadata file, manifest list and manifests

	LastRun          time.Time // zero: no maintenance yet
	LastDuration     time.Duration
	ExpiredSnapshots int    // snapshots the last pass expired
	FilesCompacted   int    // data files compaction replaced
	FilesWritten     int    // data files compaction wrote
	OrphansRemoved   int    // unreferenced files removed
	LastError        string // "" when the last pass succeeded
}

// HealthReporter is a Sink that maintains its tables and reports on them.
type HealthReporter interface {
	Health() []TableHealth
}
