package iceberg

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/offheap"
	"github.com/dot-do/lakehouse-rpc/internal/proflabel"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// MaintenanceTotals are counters over the sink's life.
type MaintenanceTotals struct {
	Runs, Failures         int64
	ExpiryRuns             int64
	SnapshotsExpired       int64
	CompactionRuns         int64
	FilesRewritten         int64 // input files replaced by compaction
	BytesRewritten         int64 // bytes of those input files
	RowsRewritten          int64 // rows of those input files
	FilesWrittenCompaction int64
	// CompactionSeconds is the time spent compacting (planning, merging,
	// committing), and BytesStaged the bytes of the data files ingest
	// wrote: BytesRewritten / BytesStaged is compaction's write
	// amplification.
	CompactionSeconds float64
	BytesStaged       int64
	OrphanRuns        int64
	OrphansRemoved    int64
	// SkippedElsewhere counts table passes skipped because another
	// instance was maintaining the table (ExclusiveMaintenance).
	SkippedElsewhere int64
	// MergeOffHeapBytes is a gauge: the bytes the compaction merges
	// running now have mapped outside the Go heap (mergeOffHeap). They
	// count in the process's RSS; the runtime's soft memory limit is
	// lowered by as much when Config.MemoryLimit is set.
	MergeOffHeapBytes int64
}

// maintState holds the results of maintenance, for status and metrics.
type maintState struct {
	mu     sync.Mutex
	tables map[string]*tableState
	totals MaintenanceTotals

	// offHeap counts what the merges' allocators map (MergeOffHeapBytes),
	// shares Config.MemoryLimit with the Go heap, and halves the
	// collector's room while a merge runs.
	offHeap *offheap.Budget
	// stopGovern ends the Budget's Govern (Config.MemoryLimitFloor) and
	// waits for it; nil when it does not run.
	stopGovern func()
}

type tableState struct {
	sink.TableHealth
	lastOrphanRun time.Time
}

func (m *maintState) init(memoryLimit int64) {
	m.tables = make(map[string]*tableState)
	m.offHeap = offheap.NewBudget(memoryLimit)
}

// govern starts moving the process's soft limit between floor and the
// Budget's limit (offheap.Budget.Govern), logging each change; a floor of
// 0 starts nothing.
func (m *maintState) govern(floor int64, log *slog.Logger) {
	if floor <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.offHeap.Govern(ctx, floor, func(limit int64, gcShare, gcShareRecent float64) {
			log.Info("soft memory limit moved", "bytes", limit, "gc_cpu_share", math.Round(gcShare*1000)/1000,
				"gc_cpu_share_recent", math.Round(gcShareRecent*1000)/1000)
		})
	}()
	m.stopGovern = func() {
		cancel()
		<-done
	}
}

// Health returns the last known health of every table maintained so far,
// sorted by name.
func (s *Sink) Health() []sink.TableHealth {
	s.maint.mu.Lock()
	defer s.maint.mu.Unlock()
	out := make([]sink.TableHealth, 0, len(s.maint.tables))
	for _, h := range s.maint.tables {
		out = append(out, h.TableHealth)
	}
	slices.SortFunc(out, func(a, b sink.TableHealth) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// MaintenanceTotals returns the maintenance counters.
func (s *Sink) MaintenanceTotals() MaintenanceTotals {
	s.maint.mu.Lock()
	defer s.maint.mu.Unlock()
	t := s.maint.totals
	t.MergeOffHeapBytes = s.maint.offHeap.Mapped()
	return t
}

// MaintainOptions choose the jobs of one maintenance pass.
type MaintainOptions struct {
	// Orphans forces orphan cleanup in this pass; otherwise it runs when
	// its interval has passed for the table.
	Orphans bool
	// MirrorDeletes compacts every mirror partition that has delete
	// files; otherwise only those over the compaction triggers (the
	// background pass keeps them bounded; rewriting every partition each
	// interval would rewrite the whole table under a steady load).
	MirrorDeletes bool
}

// RunMaintenance runs maintenance passes every Maintenance.Interval until ctx
// ends. It is what `lakehouse serve` runs in the background.
func (s *Sink) RunMaintenance(ctx context.Context) {
	proflabel.Set(ctx, proflabel.Maintenance)
	t := time.NewTicker(s.cfg.Maintenance.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Maintain(ctx, MaintainOptions{}); err != nil && ctx.Err() == nil {
			s.log.Warn("table maintenance failed", "err", err)
		}
	}
}

// Maintain runs one maintenance pass over every table of the namespace:
// snapshot expiry, compaction and, when due, orphan cleanup. A failing table
// does not stop the others, unless one of its jobs timed out (the store or
// catalog stalls: the rest of the pass would only time out too); the errors
// are joined.
func (s *Sink) Maintain(ctx context.Context, opts MaintainOptions) error {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Maintenance.Timeout)
	idents, err := s.listTables(lctx)
	cancel()
	if err != nil {
		return err
	}
	var errs []error
	for _, ident := range idents {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.MaintainTable(ctx, catalog.TableNameFromIdent(ident), opts); err != nil {
			errs = append(errs, err)
			var se *stalledError
			if errors.As(err, &se) {
				errs = append(errs, fmt.Errorf("iceberg: maintenance pass stopped: the store or catalog did not answer within %v", s.cfg.Maintenance.Timeout))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// MaintainTable runs one maintenance pass over one table (original or
// sanitised name). Every job keeps the table's rows exactly as they are.
// Each job has its own deadline, MaintenanceConfig.Timeout.
//
// With ExclusiveMaintenance, a table another instance is maintaining is
// skipped (nil error, counted in SkippedElsewhere).
func (s *Sink) MaintainTable(ctx context.Context, name string, opts MaintainOptions) error {
	cfg := s.cfg.Maintenance
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	release, err := s.lockTableMaintenance(lctx, name)
	cancel()
	if errors.Is(err, errMaintLockHeld) {
		s.count(func(t *MaintenanceTotals) { t.SkippedElsewhere++ })
		s.log.Debug("table maintenance skipped: another instance is maintaining it", "table", name)
		return nil
	}
	if err != nil {
		s.count(func(t *MaintenanceTotals) {
			t.Runs++
			if ctx.Err() == nil { // not interrupted: see below
				t.Failures++
			}
		})
		return fmt.Errorf("iceberg: maintain table %s: %w", sink.SanitizeName(name), err)
	}
	defer release()
	h := s.healthOf(name)
	var (
		run  sink.TableHealth
		errs []error
	)
	// job runs one job under the maintenance timeout. Once a job timed
	// out (the store or catalog stalls), the pass's later jobs would only
	// time out too: they are skipped, and the next pass tries again.
	stalled := false
	job := func(f func(ctx context.Context) error) error {
		if stalled {
			return errSkippedStalled
		}
		jctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		err := f(jctx)
		if err != nil && errors.Is(jctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			stalled = true
			err = fmt.Errorf("%w (maintenance timeout %v)", err, cfg.Timeout)
		}
		return err
	}
	var n int
	err = job(func(ctx context.Context) (err error) { n, err = s.expireSnapshots(ctx, name); return err })
	if err != nil {
		errs = append(errs, fmt.Errorf("expire snapshots: %w", err))
	} else {
		run.ExpiredSnapshots = n
	}
	if !cfg.CompactDisabled {
		var cr compactResult
		cstart := time.Now()
		err = job(func(ctx context.Context) (err error) { cr, err = s.compactTable(ctx, name); return err })
		csecs := time.Since(cstart).Seconds()
		if err != nil {
			errs = append(errs, fmt.Errorf("compaction: %w", err))
		}
		run.FilesCompacted, run.FilesWritten = cr.filesRemoved, cr.filesAdded
		s.count(func(t *MaintenanceTotals) {
			if cr.groups > 0 {
				t.CompactionRuns++
			}
			t.FilesRewritten += int64(cr.filesRemoved)
			t.BytesRewritten += cr.bytesBefore
			t.RowsRewritten += cr.rowsBefore
			t.FilesWrittenCompaction += int64(cr.filesAdded)
			t.CompactionSeconds += csecs
		})
	}
	orphansDue := !cfg.OrphanDisabled && (opts.Orphans || time.Since(h.lastOrphanRun) >= cfg.OrphanInterval)
	if orphansDue {
		var removed int
		err = job(func(ctx context.Context) (err error) { removed, err = s.removeOrphans(ctx, name); return err })
		if err != nil {
			errs = append(errs, fmt.Errorf("orphan cleanup: %w", err))
		}
		run.OrphansRemoved = removed
	}
	if s.cfg.Mirror {
		// One job: its parts share the maintenance timeout.
		if err := job(func(ctx context.Context) error {
			return errors.Join(s.maintainMirror(ctx, name, orphansDue, opts.MirrorDeletes)...)
		}); err != nil {
			errs = append(errs, err)
		}
	}
	var (
		health sink.TableHealth
		herr   error
	)
	herr = job(func(ctx context.Context) (err error) { health, err = s.measure(ctx, name); return err })
	if herr != nil {
		errs = append(errs, fmt.Errorf("measure: %w", herr))
	}
	err = errors.Join(errs...)
	// A pass that ctx ended (the server stopping) was interrupted, not
	// failed: the table is as it was, and neither the failure count nor a
	// warning should tell an operator otherwise on every clean shutdown.
	failed := err != nil && ctx.Err() == nil

	s.maint.mu.Lock()
	cur := s.maint.tables[h.Name]
	if herr == nil {
		cur.Snapshots, cur.DataFiles, cur.Manifests, cur.MetadataBytes = health.Snapshots, health.DataFiles, health.Manifests, health.MetadataBytes
	}
	cur.LastRun, cur.LastDuration = start, time.Since(start)
	cur.ExpiredSnapshots, cur.FilesCompacted, cur.FilesWritten, cur.OrphansRemoved = run.ExpiredSnapshots, run.FilesCompacted, run.FilesWritten, run.OrphansRemoved
	cur.LastError = ""
	if failed {
		cur.LastError = err.Error()
	}
	if orphansDue {
		cur.lastOrphanRun = start
	}
	s.maint.totals.Runs++
	if failed {
		s.maint.totals.Failures++
	}
	s.maint.mu.Unlock()

	if run.ExpiredSnapshots+run.FilesCompacted+run.OrphansRemoved > 0 || err != nil {
		level, msg := s.log.Info, "table maintenance"
		switch {
		case failed:
			level = s.log.Warn
		case err != nil:
			msg = "table maintenance interrupted"
		}
		level(msg, "table", h.Name, "expired_snapshots", run.ExpiredSnapshots,
			"files_compacted", run.FilesCompacted, "files_written", run.FilesWritten,
			"orphans_removed", run.OrphansRemoved, "snapshots", health.Snapshots, "data_files", health.DataFiles,
			"manifests", health.Manifests, "metadata_bytes", health.MetadataBytes,
			"duration_ms", time.Since(start).Milliseconds(), "err", err)
	}
	if err != nil {
		err = fmt.Errorf("iceberg: maintain table %s: %w", h.Name, err)
		if stalled {
			return &stalledError{err}
		}
		return err
	}
	return nil
}

// errSkippedStalled stands for the jobs of a pass skipped after one timed
// out.
var errSkippedStalled = errors.New("skipped: an earlier job of this pass timed out")

// stalledError is a table's maintenance failure in which a job timed out:
// Maintain skips the pass's other tables.
type stalledError struct{ err error }

func (e *stalledError) Error() string { return e.err.Error() }
func (e *stalledError) Unwrap() error { return e.err }

func (s *Sink) healthOf(name string) tableState {
	san := sink.SanitizeName(name) // idempotent on sanitised names
	s.maint.mu.Lock()
	defer s.maint.mu.Unlock()
	h, ok := s.maint.tables[san]
	if !ok {
		h = &tableState{TableHealth: sink.TableHealth{Name: san}}
		s.maint.tables[san] = h
	}
	return *h
}

func (s *Sink) count(f func(*MaintenanceTotals)) {
	s.maint.mu.Lock()
	defer s.maint.mu.Unlock()
	f(&s.maint.totals)
}

// expireSnapshots expires the table's snapshots older than the retention,
// keeping at least MinSnapshots and at most MaxSnapshots and
// MaxSnapshotBytes (snapshotsToKeep), and deletes the files only they
// referenced. The commit lock keeps it from racing an ingest commit of this
// process.
func (s *Sink) expireSnapshots(ctx context.Context, name string) (int, error) {
	return s.expireSnapshotsOf(ctx, s.Identifier(name), func() (*table.Table, error) { return s.LoadTable(ctx, name) })
}

// expireSnapshotsOf is expireSnapshots for the table ident, which load
// returns.
func (s *Sink) expireSnapshotsOf(ctx context.Context, ident table.Identifier, load func() (*table.Table, error)) (int, error) {
	cfg := s.cfg.Maintenance
	unlock, err := s.lockTable(ctx, ident)
	if err != nil {
		return 0, err
	}
	defer unlock()
	tbl, err := load()
	if err != nil {
		return 0, err
	}
	snaps := tbl.Metadata().Snapshots()
	if len(snaps) <= cfg.MinSnapshots {
		return 0, nil
	}
	now := time.Now()
	olderThan := cfg.SnapshotRetention
	if keep, keepFrom := snapshotsToKeep(snaps, cfg); keep < len(snaps) {
		// Expire all but the newest keep: the age of the oldest
		// snapshot to keep, less a second of slack (iceberg-go measures
		// ages from its own, later, clock reading).
		olderThan = min(olderThan, max(now.Sub(keepFrom)-time.Second, 0))
	}
	cutoff := now.Add(-olderThan).UnixMilli()
	old := 0
	for _, sn := range snaps {
		if sn.TimestampMs < cutoff {
			old++
		}
	}
	if old == 0 {
		return 0, nil
	}
	txn := tbl.NewTransaction()
	if err := txn.ExpireSnapshots(table.WithOlderThan(olderThan), table.WithRetainLast(cfg.MinSnapshots)); err != nil {
		return 0, err
	}
	after, err := txn.Commit(ctx)
	if err != nil {
		return 0, err
	}
	n := len(snaps) - len(after.Metadata().Snapshots())
	s.count(func(t *MaintenanceTotals) { t.ExpiryRuns++; t.SnapshotsExpired += int64(n) })
	return n, nil
}

// removeOrphans deletes files under the table's location that no snapshot
// or metadata file references, once they are older than OrphanAge, and
// never a file staged by this sink for a commit to come.
func (s *Sink) removeOrphans(ctx context.Context, name string) (int, error) {
	return s.removeOrphansOf(ctx, name, func() (*table.Table, error) { return s.LoadTable(ctx, name) })
}

// removeOrphansOf is removeOrphans for the table load returns.
func (s *Sink) removeOrphansOf(ctx context.Context, name string, load func() (*table.Table, error)) (int, error) {
	tbl, err := load()
	if err != nil {
		return 0, err
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return 0, err
	}
	// iceberg-go calls the delete function from several goroutines.
	var removed atomic.Int64
	var res table.OrphanCleanupResult
	// A directory that disappears while the walk lists the table (the
	// committer deleting applied mirror change files: on an object store
	// the prefix goes with its last object) fails iceberg-go's walk with
	// "file does not exist"; the next walk no longer meets it. (Wrapping the
	// table's IO to skip such errors instead hid the IO's other interfaces,
	// and a walk on a stalled store then outlived its deadline.)
	for attempt := 1; ; attempt++ {
		res, err = tbl.DeleteOrphanFiles(ctx,
			table.WithFilesOlderThan(s.cfg.Maintenance.OrphanAge),
			table.WithDeleteFunc(func(path string) error {
				if s.isStaged(path) || isTombstoneFile(tbl.Properties(), path) || s.isPendingChangeFile(ctx, path) {
					return nil // a mirror's tombstones are referenced by a property, change files by parts
				}
				if err := fs.Remove(path); err != nil {
					return err
				}
				removed.Add(1)
				return nil
			}))
		if err == nil || !errors.Is(err, iofs.ErrNotExist) || attempt == orphanWalkAttempts || ctx.Err() != nil {
			break
		}
		s.log.Debug("orphan cleanup: a directory vanished during the walk; walking again", "table", name, "err", err)
	}
	n := int(removed.Load())
	if err != nil {
		return n, err
	}
	if skipped := len(res.OrphanFiles) - n; skipped > 0 {
		s.log.Debug("orphan cleanup kept staged files", "table", name, "kept", skipped)
	}
	s.count(func(t *MaintenanceTotals) { t.OrphanRuns++; t.OrphansRemoved += int64(n) })
	return n, nil
}

// measure reads a table's size: snapshots, live data files, manifests of the
// current snapshot, and the bytes of the metadata a commit reads and
// rewrites.
func (s *Sink) measure(ctx context.Context, name string) (sink.TableHealth, error) {
	var h sink.TableHealth
	tbl, err := s.LoadTable(ctx, name)
	if err != nil {
		return h, err
	}
	h.Snapshots = len(tbl.Metadata().Snapshots())
	fs, err := tbl.FS(ctx)
	if err != nil {
		return h, err
	}
	if f, err := fs.Open(tbl.MetadataLocation()); err == nil {
		if st, err := f.Stat(); err == nil {
			h.MetadataBytes += st.Size()
		}
		f.Close()
	}
	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return h, nil
	}
	if snap.Summary != nil {
		h.DataFiles, _ = strconv.ParseInt(snap.Summary.Properties["total-data-files"], 10, 64)
	}
	if f, err := fs.Open(snap.ManifestList); err == nil {
		if st, err := f.Stat(); err == nil {
			h.MetadataBytes += st.Size()
		}
		f.Close()
	}
	mans, err := snap.Manifests(fs)
	if err != nil {
		return h, err
	}
	h.Manifests = len(mans)
	for _, m := range mans {
		h.MetadataBytes += m.Length()
	}
	return h, nil
}
