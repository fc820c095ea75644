package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics. Names and units are stable.
type metrics struct {
	batches       *prometheus.CounterVec // by result: ok, buffered, fallback, duplicate, nack_<reason>
	entries       prometheus.Counter
	bytes         prometheus.Counter
	appendSeconds prometheus.Histogram
	flushes       *prometheus.CounterVec // by result: success, failure
	flushSeconds  prometheus.Histogram
	flushedRows   prometheus.Counter
	stages        *prometheus.CounterVec // by result: success, failure
	stageSeconds  prometheus.Histogram
	commitSeconds prometheus.Histogram
	readBack      prometheus.Counter // frame bytes read back from the write-ahead log
	fencedBatches prometheus.Counter // batches dropped because their source moved (lease.go)
	redirects     prometheus.Counter // connects answered with Redirect (lease.go)
	// Batches whose CRC-32 does not match. Legacy children reuse their
	// encode buffer and send stale checksums (legacy-protocol.md), so a
	// mismatch is counted, not refused.
	checksumMismatches prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		checksumMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_batch_checksum_mismatches_total", Help: "Batches whose CRC-32 did not match (accepted: legacy children send stale checksums).",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lakehouse_batches_total", Help: "Batches received, by result (ok, buffered, fallback, duplicate, nack_<reason>).",
		}, []string{"result"}),
		entries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_entries_accepted_total", Help: "Entries accepted into the write-ahead log.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_batch_bytes_accepted_total", Help: "Bytes of batch frames accepted into the write-ahead log.",
		}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lakehouse_wal_append_seconds", Help: "Time to make an accepted batch durable (write + group-commit fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lakehouse_flushes_total", Help: "Flushes (commits of everything buffered and staged), by result (success, failure).",
		}, []string{"result"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lakehouse_flush_seconds", Help: "Duration of flushes: staging what is buffered, then committing.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		stages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lakehouse_stages_total", Help: "Buffer contents written as data files ahead of their commit, by result (success, failure).",
		}, []string{"result"}),
		stageSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lakehouse_stage_seconds", Help: "Duration of writing buffered batches as data files.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lakehouse_commit_seconds", Help: "Duration of committing staged data files to every table of a flush (catalog and metadata work only).",
			Buckets: prometheus.ExponentialBuckets(0.002, 1.5, 24),
		}),
		readBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_wal_read_back_bytes_total", Help: "Bytes of buffered batches read back from the write-ahead log at flush (held only there while the memory buffer was full).",
		}),
		fencedBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_fenced_batches_total", Help: "Accepted batches dropped uncommitted because their source moved to another instance (multi-instance mode).",
		}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_redirects_total", Help: "Connects answered with a redirect to the instance that owns the source (multi-instance mode).",
		}),
		flushedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lakehouse_flushed_entries_total", Help: "Entries committed to the sink.",
		}),
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.batches, m.entries, m.bytes, m.appendSeconds, m.flushes, m.flushSeconds, m.flushedRows, m.checksumMismatches,
		m.stages, m.stageSeconds, m.commitSeconds, m.readBack, m.fencedBatches, m.redirects,
		gauge("lakehouse_staged_bytes", "Bytes of data files written and waiting for their commit.", func() float64 {
			return float64(s.buf.stats(false).stagedBytes)
		}),
		gauge("lakehouse_buffer_bytes", "Bytes buffered in memory (including a running flush).", func() float64 {
			return float64(s.buf.stats(false).memBytes())
		}),
		gauge("lakehouse_buffer_log_only_bytes", "Bytes of buffered batches held only in the write-ahead log (the memory buffer was full); read back at flush.", func() float64 {
			st := s.buf.stats(false)
			return float64(st.queuedBytes - st.queuedMem)
		}),
		gauge("lakehouse_buffer_utilization_ratio", "Share of the memory buffer in use.", func() float64 {
			return s.buf.stats(false).utilization
		}),
		gauge("lakehouse_wal_bytes", "Bytes of the write-ahead log on disk.", func() float64 {
			return float64(s.wal.Stats().SizeBytes)
		}),
		gauge("lakehouse_connected_sources", "Streams open now.", func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.sessions))
		}),
		gauge("lakehouse_recovering", "1 while commits fail and the recovery loop retries.", func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.recovery.active {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lakehouse_wal_syncs_total", Help: "fsync calls of the write-ahead log."},
			func() float64 { return float64(s.wal.Stats().Syncs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lakehouse_wal_appends_total", Help: "Records appended to the write-ahead log."},
			func() float64 { return float64(s.wal.Stats().Appends) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lakehouse_wal_failures_total", Help: "Write or fsync failures of the write-ahead log (each refuses batches until it recovers)."},
			func() float64 { return float64(s.wal.Stats().Failures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lakehouse_wal_recoveries_total", Help: "Recoveries of the write-ahead log after a failure, without a restart."},
			func() float64 { return float64(s.wal.Stats().Recoveries) }),
		gauge("lakehouse_wal_failed", "1 while the write-ahead log is stopped by a write or fsync failure and recovering (batches nacked buffer_full).", func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.wf.down {
				return 1
			}
			return 0
		}),
	)
	return m
}
