package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// DefaultCommitTimeout is the default of Config.CommitTimeout.
const DefaultCommitTimeout = 2 * time.Minute

// DefaultRecoveryInitialDelay and DefaultRecoveryMaxDelay are the defaults
// of Config.RecoveryInitialDelay and Config.RecoveryMaxDelay (the
// original's: 1 s, doubling, at most 60 s).
const (
	DefaultRecoveryInitialDelay = time.Second
	DefaultRecoveryMaxDelay     = 60 * time.Second
)

// DefaultMaxMessageSize is the default bound on a batch frame: 16 MiB, the
// legacy protocol's maximum message, and also the most it may be set to.
const DefaultMaxMessageSize = codec.MaxMessageSize

// Config configures a Server. Zero fields take the defaults documented on
// each field, which are those of the original DEFAULT_PARENT_CONFIG (see
// DESIGN.md) unless said otherwise.
type Config struct {
	// DataDir holds the write-ahead log and the sequencing state. Required.
	DataDir string
	// Sink receives flushed entries. Required. The server does not close it.
	Sink sink.Sink
	// Coordinator, when set, runs the server as one of several instances
	// sharing a catalog (lease.go, docs/scale-out.md): each source is
	// served under a lease, and every commit is fenced by the leases'
	// epochs. The server does not close it.
	Coordinator Coordinator

	// FlushEntries flushes when the buffer holds this many entries. Default 10,000.
	FlushEntries int
	// FlushBytes flushes when the buffer holds this many bytes. It is also
	// the most one stage or commit takes from the buffer (one batch at
	// least), which bounds what a flush reads back from the write-ahead log.
	// Default 32 MiB.
	FlushBytes int64
	// FlushAge flushes when the oldest buffered batch is this old. Default 60 s.
	FlushAge time.Duration
	// FlushInterval is the commit interval: every interval, what is
	// buffered and staged is committed, so a table gets at most one snapshot
	// per interval however fast data arrives (manual and shutdown flushes
	// excepted). It sets freshness. Default 30 s; 1 s works.
	//
	// FlushEntries, FlushBytes, FlushAge and memory pressure write the
	// buffer as data files early (staging), freeing memory, when the sink
	// can stage (the Iceberg sink can); with a sink that cannot, they
	// commit as well.
	FlushInterval time.Duration
	// AlignCommits schedules the commits at the FlushInterval's multiples
	// of Unix time (internal/commitslot) instead of an interval after the
	// last commit: what the sink's elected committer expects in
	// multi-instance mode, so that every instance's part of an interval
	// shares one snapshot.
	AlignCommits bool
	// CommitTimeout bounds each call to the sink: each staging, each
	// commit, and reading the sink's watermarks at start-up. A store or
	// catalog that stalls fails the flush after it (acks then say
	// fallback); the data stays in the write-ahead log and the recovery
	// loop retries. Default DefaultCommitTimeout (2 min).
	CommitTimeout time.Duration
	// MaxBufferBytes bounds the frames the buffer holds in memory; batches
	// beyond it are held only in the write-ahead log, and read back from it
	// at flush (WALMaxBytes is what refuses batches). Memory stays within
	// it plus one flush (FlushBytes). Default 128 MiB.
	MaxBufferBytes int64
	// BufferedThreshold: acks say "buffered" above this utilization. Default 0.8.
	BufferedThreshold float64
	// PressureThreshold: a flush starts at this utilization. Default 0.9.
	PressureThreshold float64
	// RetryDelay is the retry delay given with buffer_full nacks. Default 5 s.
	RetryDelay time.Duration

	// WALMaxBytes caps the write-ahead log on disk; beyond it batches are
	// nacked buffer_full. Default 1 GiB.
	WALMaxBytes int64
	// WALCommitThreshold commits early, ahead of FlushInterval, when the
	// write-ahead log holds this share of WALMaxBytes and there is
	// something to commit. Only a commit releases the log, so without it a
	// load above WALMaxBytes per FlushInterval fills the log and is refused
	// (buffer_full) until the next scheduled commit: stop and go. Tables
	// then get a snapshot per early commit rather than per interval. 1
	// turns early commits off. Default 0.5.
	WALCommitThreshold float64
	// WALSegmentBytes is the size at which the log rolls to a new segment.
	// Default 64 MiB.
	WALSegmentBytes int64
	// WALRecoveryDelay and WALRecoveryMaxDelay pace the recovery of the
	// write-ahead log after a write or fsync failure (a full disk): the
	// first probe runs at once, the next after WALRecoveryDelay, doubling up
	// to WALRecoveryMaxDelay, until the disk takes a write and an fsync
	// again. Defaults 100 ms and 2 s.
	WALRecoveryDelay    time.Duration
	WALRecoveryMaxDelay time.Duration
	// NoSync skips fsync in the write-ahead log. For tests only: acks then
	// do not survive a machine crash.
	NoSync bool

	// DedupWindow and DedupEntries bound the (source, entry sequence) window
	// used for legacy sources (SEQUENCE_MODE_ENTRY). Defaults 5 min, 10,000.
	DedupWindow  time.Duration
	DedupEntries int

	// Recovery of failing commits: up to RecoveryRetries attempts per round,
	// the first after RecoveryInitialDelay, doubling up to RecoveryMaxDelay;
	// rounds repeat until a commit succeeds. Defaults 10, 1 s, 60 s; an
	// initial delay above the maximum is the maximum. After an outage, the
	// backlog is committed at most RecoveryMaxDelay after the store returns.
	RecoveryRetries      int
	RecoveryInitialDelay time.Duration
	RecoveryMaxDelay     time.Duration

	// MaxMessageSize bounds a batch frame (a structured batch counts as the
	// frame it encodes to); larger batches are nacked invalid_format.
	// Default and maximum DefaultMaxMessageSize. Create the grpc.Server with
	// Server.GRPCOptions, so that oversized batches reach the server and
	// get that nack instead of ending the stream.
	MaxMessageSize int
	// SkipJSONValidation stores before/after without checking they are JSON.
	// By default invalid JSON is nacked invalid_format.
	SkipJSONValidation bool

	// Limits bound what clients can make the server do (limits.go).
	Limits Limits

	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, receives the server's Prometheus metrics
	// (lakehouse_* names).
	Metrics prometheus.Registerer
}

// DefaultWALCommitThreshold is the default Config.WALCommitThreshold.
const DefaultWALCommitThreshold = 0.5

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("server: Config.DataDir is required")
	}
	if c.Sink == nil {
		return errors.New("server: Config.Sink is required")
	}
	if c.CommitTimeout < 0 {
		return fmt.Errorf("server: Config.CommitTimeout %v must be positive", c.CommitTimeout)
	}
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defF := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.FlushEntries <= 0 {
		c.FlushEntries = 10000
	}
	def(&c.FlushBytes, 32<<20)
	defD(&c.FlushAge, 60*time.Second)
	defD(&c.FlushInterval, 30*time.Second)
	defD(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.MaxBufferBytes, 128<<20)
	defF(&c.BufferedThreshold, 0.8)
	defF(&c.PressureThreshold, 0.9)
	defD(&c.RetryDelay, 5*time.Second)
	def(&c.WALMaxBytes, 1<<30)
	if c.WALCommitThreshold == 0 {
		c.WALCommitThreshold = DefaultWALCommitThreshold
	}
	def(&c.WALSegmentBytes, 64<<20)
	defD(&c.WALRecoveryDelay, 100*time.Millisecond)
	defD(&c.WALRecoveryMaxDelay, 2*time.Second)
	defD(&c.DedupWindow, 5*time.Minute)
	if c.DedupEntries <= 0 {
		c.DedupEntries = 10000
	}
	if c.RecoveryRetries <= 0 {
		c.RecoveryRetries = 10
	}
	defD(&c.RecoveryInitialDelay, DefaultRecoveryInitialDelay)
	defD(&c.RecoveryMaxDelay, DefaultRecoveryMaxDelay)
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxMessageSize > DefaultMaxMessageSize {
		return fmt.Errorf("server: Config.MaxMessageSize %d exceeds the protocol's maximum of %d bytes", c.MaxMessageSize, DefaultMaxMessageSize)
	}
	if c.WALCommitThreshold < 0 || c.WALCommitThreshold > 1 {
		return fmt.Errorf("server: Config.WALCommitThreshold %v is not within (0, 1] (a share of WALMaxBytes; 1 turns early commits off)", c.WALCommitThreshold)
	}
	if err := c.Limits.setDefaults(); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
