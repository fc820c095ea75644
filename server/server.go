// Package server is the CDC aggregator: it accepts CDC streams over gRPC,
// sequences and deduplicates batches, makes each accepted batch durable in a
// local write-ahead log before acknowledging it, buffers batches in memory and
// flushes them to a sink (the Iceberg sink in production), reporting
// per-source persisted watermarks back to the streams.
//
// Guarantees: an ok/buffered/fallback ack means the batch is fsync'd in the
// write-ahead log and survives kill -9; batches are committed to the sink
// exactly once per source, resolved from watermarks committed atomically with
// the data; nothing accepted is evicted: batches beyond the memory budget are
// held only in the log (read back at flush), and when the log is full,
// batches are refused with buffer_full and a retry delay.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
	"github.com/dot-do/lakehouse-rpc/internal/dirlock"
	"github.com/dot-do/lakehouse-rpc/server/wal"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// ServiceName is the gRPC service name, as registered with health checks.
const ServiceName = "lakehouse.v1.CDCService"

// Server is the aggregator. Create it with New, register it on a grpc.Server
// with Register, and stop it with Shutdown.
type Server struct {
	lakehousev1.UnimplementedCDCServiceServer

	cfg    Config
	log    *slog.Logger
	lock   *dirlock.Lock // held on DataDir until the server stops
	wal    *wal.Log
	sink   sink.Sink
	stager sink.Stager       // the sink, when it can stage; nil otherwise
	marker sink.CommitMarker // the sink, when it marks commits; nil otherwise
	coord  Coordinator       // nil: a single instance
	health *health.Server
	decode codec.DecodeOptions
	m      *metrics

	buf *buffer // the batches from their append to their commit

	mu          sync.Mutex
	sources     map[string]*source
	sessions    map[*session]struct{}
	draining    bool
	flushing    bool
	recovery    recoveryState
	lastFlush   *lakehousev1.FlushResult
	lastFlushT  time.Time
	nextFlushT  time.Time
	flushID     uint64
	flushStartT time.Time
	flushRate   float64 // bytes per ms of the last successful stage or flush, for retry delays
	wf          walFault
	commits     []CommitRecord // recent table commits, oldest first

	// Totals since start, for Drain (drain.go).
	committedBatches, committedEntries, droppedBatches atomic.Uint64

	// walGate is held shared by accept from its write-ahead log check to
	// the batch's enqueue, and exclusively by the log's recovery, so that
	// no batch judged before a failure is enqueued after the recovery.
	walGate sync.RWMutex
	bg      sync.WaitGroup // the write-ahead log recovery goroutine

	kick chan struct{} // a threshold was reached
	// flushCtx bounds every sink call; stopServer cancels it once the
	// drain's deadline has passed, so a hung store cannot block shutdown.
	flushCtx    context.Context
	cancelFlush context.CancelFunc
	flushReq    chan flushRequest
	stop        chan struct{}
	done        chan struct{}
	closeMu     sync.Mutex
	closed      bool

	// Limits (limits.go, ratelimit.go, manualflush.go).
	rates   *sourceRates // nil: no rate limit
	streams *streamCaps
	manual  *flushGate
}

type flushRequest struct {
	reason lakehousev1.FlushReason
	reply  chan *lakehousev1.FlushResult
}

// New opens the write-ahead log in cfg.DataDir, restores the sequencing state
// and the buffer from it, and starts the flusher.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	// Before anything reads the log: a second server on the directory would
	// replay and commit the first one's batches.
	lock, err := dirlock.Acquire(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	l, err := wal.Open(wal.Options{
		Dir:          filepath.Join(cfg.DataDir, "wal"),
		SegmentBytes: cfg.WALSegmentBytes,
		MaxBytes:     cfg.WALMaxBytes,
		NoSync:       cfg.NoSync,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("server: open write-ahead log: %w", err), lock.Release())
	}
	s := &Server{
		cfg:      cfg,
		lock:     lock,
		log:      cfg.Logger,
		wal:      l,
		sink:     cfg.Sink,
		coord:    cfg.Coordinator,
		health:   health.NewServer(),
		decode:   codec.DecodeOptions{ValidateUTF8: true, ValidateJSON: !cfg.SkipJSONValidation},
		sources:  make(map[string]*source),
		sessions: make(map[*session]struct{}),
		recovery: newRecoveryState(&cfg),
		kick:     make(chan struct{}, 1),
		flushReq: make(chan flushRequest),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.buf = newBuffer(cfg.MaxBufferBytes, cfg.FlushBytes, func() wal.LSN { return wal.LSN(l.Stats().LastLSN) })
	s.stager, _ = cfg.Sink.(sink.Stager)
	s.marker, _ = cfg.Sink.(sink.CommitMarker)
	s.flushCtx, s.cancelFlush = context.WithCancel(context.Background())
	s.m = newMetrics(cfg.Metrics, s)
	s.rates, s.streams = newSourceRates(cfg.Limits), newStreamCaps(cfg.Limits, cfg.Metrics)
	s.manual = newFlushGate(cfg.Limits.MinManualFlushInterval, s.stop, s.flushDirect)
	unrecorded, err := s.restore(ctx)
	if err != nil {
		s.cancelFlush()
		return nil, errors.Join(err, l.Close(), lock.Release())
	}
	if s.coord != nil {
		err := s.recordMarks(ctx, unrecorded)
		if err == nil {
			err = s.reclaimLeases(ctx)
		}
		if err != nil {
			s.cancelFlush()
			return nil, errors.Join(err, l.Close(), lock.Release())
		}
		s.bg.Add(1)
		go s.runLeases()
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	go s.runFlusher()
	if s.buf.stats(false).queuedBatches > 0 {
		s.kickFlush()
	}
	return s, nil
}

// Register registers the CDC service, the standard health service and server
// reflection on gs.
func (s *Server) Register(gs *grpc.Server) {
	lakehousev1.RegisterCDCServiceServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
}

// restore rebuilds the sequencing state: the saved state file, the sink's
// watermarks (in case the local state was lost), then every record still in
// the write-ahead log, which also refills the buffer. It returns the saved
// committed marks that may not be recorded in the lease rows.
func (s *Server) restore(ctx context.Context) ([]coord.Mark, error) {
	st, err := loadState(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	for id, ss := range st.Sources {
		src := s.sourceLocked(id)
		src.shard = ss.Shard
		src.mode = ss.Mode
		src.lastSeq, src.persistedSeq = ss.LastSeq, ss.LastSeq
		src.persistedEpoch, src.markedSeq = ss.Epoch, ss.MarkedSeq
		src.lastEntry, src.persistedEntry = ss.LastEntry, ss.LastEntry
		if len(ss.Dedup) > 0 {
			src.dedup = newDedupWindow(s.cfg.DedupEntries, s.cfg.DedupWindow)
			for _, it := range ss.Dedup {
				src.dedup.add(it.Seq, it.AtMs)
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.CommitTimeout)
	wms, err := s.sink.Watermarks(wctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("server: read sink watermarks (commit timeout %v): %w", s.cfg.CommitTimeout, err)
	}
	for id, w := range wms {
		src := s.sourceLocked(id)
		src.lastSeq = max(src.lastSeq, w.BatchSeq)
		src.lastEntry = max(src.lastEntry, w.EntrySeq)
	}
	// Records at or below the saved committed sequence need no replay.
	replayed := make(map[string]uint64, len(st.Sources))
	for id, ss := range st.Sources {
		replayed[id] = ss.LastSeq
	}
	inLog := make(map[string]bool)
	n, skipped, entries, bytes := 0, 0, 0, int64(0)
	var scratch codec.Batch
	err = s.wal.Replay(func(lsn wal.LSN, data []byte) error {
		rec, err := decodeWALRecord(data)
		if err != nil {
			return fmt.Errorf("record %d: %w", lsn, err)
		}
		if rec.Seq <= replayed[rec.SourceID] {
			// Committed before the crash (the saved state says so) or a
			// second record of one batch: storing it again would duplicate.
			skipped++
			return nil
		}
		replayed[rec.SourceID] = rec.Seq
		inLog[rec.SourceID] = true
		// The frame is the replay's buffer: restore copies it if it stays
		// in memory.
		frame := rec.Frame
		if err := codec.DecodeBatchInto(&scratch, frame, codec.DecodeOptions{SkipChecksum: true}); err != nil {
			return fmt.Errorf("record %d: %w", lsn, err)
		}
		src := s.sourceLocked(rec.SourceID)
		bb := &bufBatch{src: src, seq: rec.Seq, lsn: lsn, shard: rec.ShardName, arrivedMs: rec.ArrivalMs,
			frame: frame, entries: len(scratch.Entries), size: int64(len(frame)), lastEntry: maxEntrySeq(&scratch),
			firstEntry: minEntrySeq(&scratch), epoch: rec.Epoch, entryMode: rec.Mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY}
		if rec.ShardName != "" {
			src.shard = rec.ShardName
		}
		src.mode = rec.Mode
		if rec.Seq > src.lastSeq {
			src.lastSeq = rec.Seq
		}
		if bb.lastEntry > src.lastEntry {
			src.lastEntry = bb.lastEntry
		}
		if rec.Mode == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
			if src.dedup == nil {
				src.dedup = newDedupWindow(s.cfg.DedupEntries, s.cfg.DedupWindow)
			}
			for i := range scratch.Entries {
				src.dedup.add(scratch.Entries[i].Sequence, rec.ArrivalMs)
			}
		}
		s.buf.restore(bb)
		n++
		entries += bb.entries
		bytes += bb.size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("server: replay write-ahead log: %w", err)
	}
	if n+skipped > 0 {
		s.log.Info("replayed write-ahead log", "batches", n, "entries", entries, "bytes", bytes, "skipped", skipped)
	}
	// The watermarks are the highest of any table's: a flush that died
	// between two tables left the others without the batches the log
	// replays. So they count as persisted only for a source the log holds
	// nothing of (a lost state file); a replayed source's batches are
	// persisted when their flush commits every table.
	for id, w := range wms {
		if src := s.sources[id]; !inLog[id] {
			src.persistedSeq = max(src.persistedSeq, w.BatchSeq)
			src.persistedEntry = max(src.persistedEntry, w.EntrySeq)
		}
	}
	return st.unrecordedMarks(time.Now().UnixMilli(), s.cfg.DedupWindow), nil
}

// minEntrySeq is the lowest entry sequence of b, 0 if it has none.
func minEntrySeq(b *codec.Batch) uint64 {
	var m uint64
	for i := range b.Entries {
		if i == 0 || b.Entries[i].Sequence < m {
			m = b.Entries[i].Sequence
		}
	}
	return m
}

func maxEntrySeq(b *codec.Batch) uint64 {
	var m uint64
	for i := range b.Entries {
		if b.Entries[i].Sequence > m {
			m = b.Entries[i].Sequence
		}
	}
	return m
}

// sourceLocked returns the source with id, creating it. Callers hold s.mu or
// run before the server is shared.
func (s *Server) sourceLocked(id string) *source {
	src, ok := s.sources[id]
	if !ok {
		src = &source{id: id, mode: lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH}
		src.settled.L = &src.mu
		s.sources[id] = src
	}
	return src
}

// kickFlush wakes the flusher without blocking.
func (s *Server) kickFlush() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Flush implements the unary Flush RPC.
func (s *Server) Flush(ctx context.Context, req *lakehousev1.FlushRequest) (*lakehousev1.FlushResponse, error) {
	res, err := s.FlushNow(ctx, req.GetReason())
	if err != nil {
		return nil, statusFromErr(err)
	}
	return &lakehousev1.FlushResponse{Result: res}, nil
}

// FlushNow flushes the buffer and waits for the result. A flush that fails
// leaves the data in the write-ahead log and returns a result with
// UsedFallback set, not an error; errors are for a server that is closed or a
// context that ended. Flushes requested by clients go through here and are
// spaced by Limits.MinManualFlushInterval (manualflush.go).
func (s *Server) FlushNow(ctx context.Context, reason lakehousev1.FlushReason) (*lakehousev1.FlushResult, error) {
	if reason == lakehousev1.FlushReason_FLUSH_REASON_UNSPECIFIED {
		reason = lakehousev1.FlushReason_FLUSH_REASON_MANUAL
	}
	return s.manual.flush(ctx, reason)
}

// flushDirect asks the flusher for a flush now and waits for its result.
func (s *Server) flushDirect(ctx context.Context, reason lakehousev1.FlushReason) (*lakehousev1.FlushResult, error) {
	req := flushRequest{reason: reason, reply: make(chan *lakehousev1.FlushResult, 1)}
	select {
	case s.flushReq <- req:
	case <-s.done:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-req.reply:
		return res, nil
	case <-s.done:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// GetStatus implements the GetStatus RPC.
func (s *Server) GetStatus(ctx context.Context, _ *lakehousev1.GetStatusRequest) (*lakehousev1.GetStatusResponse, error) {
	return &lakehousev1.GetStatusResponse{Status: s.Status()}, nil
}

// Status reports the server's state.
func (s *Server) Status() *lakehousev1.ServerStatus {
	ws := s.wal.Stats()
	bs := s.buf.stats(true)
	s.mu.Lock()
	st := &lakehousev1.ServerStatus{
		State:           s.stateLocked(bs),
		Buffer:          bufferStatus(bs),
		LastFlush:       s.lastFlush,
		LastFlushTimeMs: unixMs(s.lastFlushT),
		NextFlushTimeMs: unixMs(s.nextFlushT),
		ServerTimeMs:    time.Now().UnixMilli(),
		Wal: &lakehousev1.WALStats{
			SizeBytes:    uint64(ws.SizeBytes),
			SegmentCount: uint32(ws.Segments),
			CapBytes:     uint64(s.cfg.WALMaxBytes),
			Syncs:        ws.Syncs,
			Appends:      ws.Appends,
			State:        lakehousev1.WALState_WAL_STATE_OK,
			Failures:     ws.Failures,
			Recoveries:   ws.Recoveries,
			LastError:    ws.LastError,
		},
		Recovery: &lakehousev1.RecoveryStatus{
			Active:          s.recovery.active,
			Attempt:         uint32(s.recovery.attempt),
			LastError:       s.recovery.lastError,
			NextRetryTimeMs: unixMs(s.recovery.nextRetry),
		},
	}
	if s.recovery.active {
		st.Recovery.PendingBatches = uint64(bs.queuedBatches + bs.inflBatches + bs.stagedBatches)
	}
	if s.wf.down {
		st.Wal.State = lakehousev1.WALState_WAL_STATE_FAILED
		st.Wal.FailedSinceMs = unixMs(s.wf.since)
		st.Wal.RecoveryAttempts = uint32(s.wf.attempts)
		st.Wal.NextProbeTimeMs = unixMs(s.wf.nextProbe)
	}
	st.Staged = &lakehousev1.StagedStats{BatchCount: uint64(bs.stagedBatches), Bytes: uint64(bs.stagedBytes),
		EntryCount: uint64(bs.stagedEntries)}
	ids := make([]string, 0, len(s.sources))
	for id := range s.sources {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	srcs := make([]*source, len(ids))
	for i, id := range ids {
		src := s.sources[id]
		srcs[i] = src
		st.Sources = append(st.Sources, &lakehousev1.SourceStatus{
			SourceId:          id,
			PersistedSequence: src.persistedSeq,
			BatchesReceived:   src.batches,
			EntriesReceived:   src.entries,
			LastSeenTimeMs:    src.lastSeenMs,
		})
	}
	s.mu.Unlock()
	st.Tables = s.tableStatus()
	// Lock order is source then server, so source fields are read after
	// releasing s.mu.
	for i, src := range srcs {
		ss := st.Sources[i]
		src.mu.Lock()
		ss.ShardName = src.shard
		ss.Connected = src.owner != nil
		ss.LastSequence = src.lastSeq
		ss.LastEntrySequence = src.lastEntry
		ss.SequenceMode = src.mode
		src.mu.Unlock()
		if ss.Connected {
			st.ConnectedSources++
		}
	}
	return st
}

// tableStatus reports the sink's tables, when it maintains them.
func (s *Server) tableStatus() []*lakehousev1.TableStatus {
	hr, ok := s.sink.(sink.HealthReporter)
	if !ok {
		return nil
	}
	var out []*lakehousev1.TableStatus
	for _, h := range hr.Health() {
		out = append(out, &lakehousev1.TableStatus{
			Name:                      h.Name,
			Snapshots:                 uint32(h.Snapshots),
			DataFiles:                 uint64(h.DataFiles),
			Manifests:                 uint32(h.Manifests),
			MetadataBytes:             uint64(h.MetadataBytes),
			LastMaintenanceTimeMs:     unixMs(h.LastRun),
			LastMaintenanceDurationMs: h.LastDuration.Milliseconds(),
			ExpiredSnapshots:          uint32(h.ExpiredSnapshots),
			FilesCompacted:            uint32(h.FilesCompacted),
			FilesWritten:              uint32(h.FilesWritten),
			OrphansRemoved:            uint32(h.OrphansRemoved),
			LastError:                 h.LastError,
		})
	}
	return out
}

func (s *Server) stateLocked(bs bufferStats) lakehousev1.ParentState {
	switch {
	case s.recovery.active, s.wf.down:
		return lakehousev1.ParentState_PARENT_STATE_RECOVERING
	case s.flushing:
		return lakehousev1.ParentState_PARENT_STATE_FLUSHING
	case bs.queuedBatches > 0:
		return lakehousev1.ParentState_PARENT_STATE_RECEIVING
	}
	return lakehousev1.ParentState_PARENT_STATE_IDLE
}

func bufferStatus(bs bufferStats) *lakehousev1.BufferStats {
	return &lakehousev1.BufferStats{
		BatchCount:        uint64(bs.queuedBatches + bs.inflBatches),
		EntryCount:        uint64(bs.queuedEntries + bs.inflEntries),
		TotalSizeBytes:    uint64(bs.queuedBytes + bs.inflBytes),
		Utilization:       bs.utilization,
		OldestBatchTimeMs: bs.oldestMs,
		NewestBatchTimeMs: bs.newestMs,
	}
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Shutdown drains the server: new batches are refused with shutting_down,
// the buffer is flushed, every stream is closed with a shutting_down nack and
// status Unavailable, the flusher stops and the write-ahead log is closed.
// Data that could not be committed stays in the log for the next start. The
// sink is not closed. Call the grpc.Server's GracefulStop after Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stopServer(ctx, true)
}

// Close stops the server at once, without flushing: streams end with status
// Unavailable, the flusher stops, and everything buffered stays in the
// write-ahead log for the next start. It is what a crash leaves, minus the
// torn tail; tests use it, and Shutdown is the graceful path.
func (s *Server) Close() error {
	return s.stopServer(context.Background(), false)
}

func (s *Server) stopServer(ctx context.Context, flush bool) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.health.Shutdown()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()

	var err error
	if flush {
		var res *lakehousev1.FlushResult
		res, err = s.flushDirect(ctx, lakehousev1.FlushReason_FLUSH_REASON_SHUTDOWN)
		if err == nil && !res.GetSuccess() {
			s.log.Warn("final flush failed; data stays in the write-ahead log", "error", res.GetError())
		}
	}
	// A flush still running now (the drain's deadline passed, or Close) is
	// abandoned: its data stays in the write-ahead log.
	s.cancelFlush()
	close(s.stop)
	// The flusher's sink call ends with its cancelled context, and a log
	// recovery gives up; a sink that ignores its context is not waited for
	// past ctx (see below).
	stopped := make(chan struct{})
	go func() {
		<-s.done
		s.bg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		// The deadline has passed and the flush is cancelled: a sink
		// that honours its context returns within a moment, and only
		// then are the log and the data directory released here (an
		// in-process restart needs the lock back at once).
		select {
		case <-stopped:
		case <-time.After(cancelGrace):
		}
	}

	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.close(errShuttingDown)
	}
	for _, sess := range sessions {
		select {
		case <-sess.finished:
		case <-ctx.Done():
		}
	}
	select {
	case <-stopped:
	default:
		// The flusher still uses the log and the data directory: they
		// are closed once it returns, and the process's exit releases
		// them if it never does (the next start replays the log).
		go func() {
			<-stopped
			s.closeLog(ctx, sessions)
		}()
		return errors.Join(err, fmt.Errorf("server: shutdown: a sink call still running after the deadline (the sink ignores its context): %w", ctx.Err()))
	}
	return errors.Join(err, s.closeLog(ctx, sessions))
}

// cancelGrace is how long Shutdown, past its deadline, waits for a
// cancelled sink call to return before treating it as stuck.
const cancelGrace = 500 * time.Millisecond

// closeLog closes the write-ahead log, waits (within ctx) for the sessions'
// reply goroutines, then releases the data directory.
func (s *Server) closeLog(ctx context.Context, sessions []*session) error {
	// Closing the log completes every queued append, so the sessions'
	// reply goroutines can finish.
	err := s.wal.Close()
	for _, sess := range sessions {
		select {
		case <-sess.repliesDone:
		case <-ctx.Done():
		}
	}
	// Released last: the sequencing state and the log are closed by now.
	return errors.Join(err, s.lock.Release())
}
