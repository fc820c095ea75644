// Package statuspage is the live status page served at "/" on the HTTP
// address: a History that samples the server's own status and Prometheus
// counters every few seconds and keeps the last 15 minutes in memory, a JSON
// endpoint for it, and an embedded HTML/JS page (no build step, no external
// assets) that draws it.
//
// One source of truth: every number comes either from the server's Status
// (what GetStatus and /status return) or from the Prometheus registry that
// /metrics serves; the history only turns counters into rates.
package statuspage

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server"
)

// Defaults of HistoryConfig.
const (
	DefaultInterval = 2 * time.Second
	DefaultWindow   = 15 * time.Minute
)

// HistoryConfig says where a History reads from.
type HistoryConfig struct {
	// Status returns the server's status (server.Server.Status). Required.
	Status func() *lakehousev1.ServerStatus
	// Gatherer is the registry /metrics serves; counters (acks, nacks,
	// entries, bytes, commits, commit latency) are read from it. Nil: no
	// rates.
	Gatherer prometheus.Gatherer
	// Commits returns the recent table commits (server.Server.RecentCommits).
	// Nil: none.
	Commits func() []server.CommitRecord
	// Interval between samples (default 2 s) and Window kept (default 15 min).
	Interval, Window time.Duration
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// Sample is one point of the history: rates over the interval that ends at T,
// and gauges at T.
type Sample struct {
	T             int64   `json:"t"` // ms since the Unix epoch
	EntriesPerSec float64 `json:"entries_per_sec"`
	BytesPerSec   float64 `json:"bytes_per_sec"`
	// Acks per second by status (ok, buffered, fallback, duplicate) and nacks
	// per second by reason (buffer_full, invalid_format, ...), from
	// lakehouse_batches_total.
	Acks  map[string]float64 `json:"acks"`
	Nacks map[string]float64 `json:"nacks"`
	// BufferUtilization is the share of the memory buffer in use (0..1+).
	BufferUtilization float64 `json:"buffer_utilization"`
	BufferBytes       uint64  `json:"buffer_bytes"`
	WALBytes          uint64  `json:"wal_bytes"`
	WALCapBytes       uint64  `json:"wal_cap_bytes"`
	StagedBytes       uint64  `json:"staged_bytes"`
	// Commits and CommitFailures are flushes in the interval
	// (lakehouse_flushes_total); CommitSeconds is the mean commit latency in
	// the interval (lakehouse_commit_seconds), 0 when none committed.
	Commits        float64 `json:"commits"`
	CommitFailures float64 `json:"commit_failures"`
	CommitSeconds  float64 `json:"commit_seconds"`
	// CommitsByTable counts the table commits that completed in the interval.
	CommitsByTable   map[string]int `json:"commits_by_table"`
	ConnectedSources uint32         `json:"connected_sources"`
	State            string         `json:"state"`
}

// SourceRow is one source as the page's table shows it.
type SourceRow struct {
	ID            string `json:"id"`
	Shard         string `json:"shard,omitempty"`
	Connected     bool   `json:"connected"`
	Mode          string `json:"mode"`
	LastAccepted  uint64 `json:"last_accepted"`
	LastPersisted uint64 `json:"last_persisted"`
	LagBatches    uint64 `json:"lag_batches"`
	// LagSeconds is how long the oldest batch not yet persisted has been
	// waiting, to within one sample interval (0 when nothing waits).
	LagSeconds      float64 `json:"lag_seconds"`
	LastSeenMs      int64   `json:"last_seen_ms"`
	EntriesPerSec   float64 `json:"entries_per_sec"` // over the last few samples
	EntriesReceived uint64  `json:"entries_received"`
	BatchesReceived uint64  `json:"batches_received"`
}

// History samples a server and keeps a bounded window of samples. Create it
// with NewHistory, run Run in a goroutine; Snapshot is safe for concurrent
// use.
type History struct {
	cfg HistoryConfig
	max int

	mu      sync.Mutex
	samples []Sample
	status  *lakehousev1.ServerStatus
	sources []SourceRow
	commits []server.CommitRecord
	prev    *counters
	lastT   time.Time
	srcs    map[string]*sourceTrack
}

// sourceTrack remembers, per source, when accepted batch numbers were first
// seen (for lag in seconds) and its recent entry counts (for its rate).
type sourceTrack struct {
	seen    []seenSeq // increasing seq, oldest first
	entries []timedCount
}

type seenSeq struct {
	seq uint64
	at  time.Time
}

type timedCount struct {
	at time.Time
	n  uint64
}

// counters are the cumulative values read from the registry.
type counters struct {
	entries, bytes         float64
	batches                map[string]float64 // lakehouse_batches_total by result
	flushOK, flushFail     float64
	commitSum, commitCount float64
}

// NewHistory returns a History; it samples nothing until Run or Sample.
func NewHistory(cfg HistoryConfig) *History {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &History{cfg: cfg, max: int(cfg.Window/cfg.Interval) + 1, srcs: make(map[string]*sourceTrack)}
}

// Interval is the time between samples.
func (h *History) Interval() time.Duration { return h.cfg.Interval }

// Run samples every Interval until ctx ends.
func (h *History) Run(ctx context.Context) {
	h.Sample()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.Sample()
		}
	}
}

// Sample takes one sample now.
func (h *History) Sample() {
	st := h.cfg.Status()
	c := h.gather()
	var commits []server.CommitRecord
	if h.cfg.Commits != nil {
		commits = h.cfg.Commits()
	}
	now := h.cfg.Now()

	h.mu.Lock()
	defer h.mu.Unlock()
	s := Sample{
		T:                 now.UnixMilli(),
		Acks:              map[string]float64{},
		Nacks:             map[string]float64{},
		CommitsByTable:    map[string]int{},
		BufferUtilization: st.GetBuffer().GetUtilization(),
		BufferBytes:       st.GetBuffer().GetTotalSizeBytes(),
		WALBytes:          st.GetWal().GetSizeBytes(),
		WALCapBytes:       st.GetWal().GetCapBytes(),
		StagedBytes:       st.GetStaged().GetBytes(),
		ConnectedSources:  st.GetConnectedSources(),
		State:             stateName(st.GetState()),
	}
	if p := h.prev; p != nil && c != nil {
		dt := now.Sub(h.lastT).Seconds()
		if dt > 0 {
			rate := func(cur, old float64) float64 { return math.Max(cur-old, 0) / dt }
			s.EntriesPerSec = rate(c.entries, p.entries)
			s.BytesPerSec = rate(c.bytes, p.bytes)
			for res, v := range c.batches {
				r := rate(v, p.batches[res])
				if reason, ok := cutPrefix(res, "nack_"); ok {
					s.Nacks[reason] = r
				} else {
					s.Acks[res] = r
				}
			}
			s.Commits = math.Max(c.flushOK-p.flushOK, 0)
			s.CommitFailures = math.Max(c.flushFail-p.flushFail, 0)
			if n := c.commitCount - p.commitCount; n > 0 {
				s.CommitSeconds = (c.commitSum - p.commitSum) / n
			}
		}
	}
	for _, cr := range commits {
		if cr.TimeMs > h.lastT.UnixMilli() && cr.TimeMs <= s.T && !h.lastT.IsZero() {
			s.CommitsByTable[tableLabel(cr.Table)]++
		}
	}
	if c != nil {
		h.prev = c
	}
	h.lastT = now
	h.samples = append(h.samples, s)
	if len(h.samples) > h.max {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-h.max:]...)
	}
	h.status = st
	h.commits = commits
	h.sources = h.sourceRowsLocked(st, now)
}

func (h *History) sourceRowsLocked(st *lakehousev1.ServerStatus, now time.Time) []SourceRow {
	rows := make([]SourceRow, 0, len(st.GetSources()))
	live := make(map[string]bool, len(st.GetSources()))
	for _, ss := range st.GetSources() {
		id := ss.GetSourceId()
		live[id] = true
		tr := h.srcs[id]
		if tr == nil {
			tr = &sourceTrack{}
			h.srcs[id] = tr
		}
		last, persisted := ss.GetLastSequence(), ss.GetPersistedSequence()
		if n := len(tr.seen); last > persisted && (n == 0 || tr.seen[n-1].seq < last) {
			tr.seen = append(tr.seen, seenSeq{last, now})
		}
		for len(tr.seen) > 0 && tr.seen[0].seq <= persisted {
			tr.seen = tr.seen[1:]
		}
		if len(tr.seen) > h.max {
			tr.seen = tr.seen[len(tr.seen)-h.max:]
		}
		tr.entries = append(tr.entries, timedCount{now, ss.GetEntriesReceived()})
		const rateSamples = 4 // the rate spans the last 3 intervals
		if len(tr.entries) > rateSamples {
			tr.entries = tr.entries[len(tr.entries)-rateSamples:]
		}
		row := SourceRow{
			ID: id, Shard: ss.GetShardName(), Connected: ss.GetConnected(), Mode: modeName(ss.GetSequenceMode()),
			LastAccepted: last, LastPersisted: persisted, LastSeenMs: ss.GetLastSeenTimeMs(),
			EntriesReceived: ss.GetEntriesReceived(), BatchesReceived: ss.GetBatchesReceived(),
		}
		if last > persisted {
			row.LagBatches = last - persisted
			if len(tr.seen) > 0 {
				row.LagSeconds = now.Sub(tr.seen[0].at).Seconds()
			}
		}
		if first, lastC := tr.entries[0], tr.entries[len(tr.entries)-1]; lastC.at.After(first.at) && lastC.n >= first.n {
			row.EntriesPerSec = float64(lastC.n-first.n) / lastC.at.Sub(first.at).Seconds()
		}
		rows = append(rows, row)
	}
	for id := range h.srcs {
		if !live[id] {
			delete(h.srcs, id)
		}
	}
	return rows
}

// gather reads the counters from the registry; nil without one or on error.
func (h *History) gather() *counters {
	if h.cfg.Gatherer == nil {
		return nil
	}
	mfs, err := h.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return nil
	}
	c := &counters{batches: map[string]float64{}}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "lakehouse_entries_accepted_total":
				c.entries += m.GetCounter().GetValue()
			case "lakehouse_batch_bytes_accepted_total":
				c.bytes += m.GetCounter().GetValue()
			case "lakehouse_batches_total":
				c.batches[label(m, "result")] += m.GetCounter().GetValue()
			case "lakehouse_flushes_total":
				if label(m, "result") == "success" {
					c.flushOK += m.GetCounter().GetValue()
				} else {
					c.flushFail += m.GetCounter().GetValue()
				}
			case "lakehouse_commit_seconds":
				c.commitSum += m.GetHistogram().GetSampleSum()
				c.commitCount += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return c
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func tableLabel(t string) string {
	if t == "" {
		return "(all)"
	}
	return t
}

func stateName(s lakehousev1.ParentState) string {
	return lowerTrim(s.String(), "PARENT_STATE_")
}

func modeName(m lakehousev1.SequenceMode) string {
	return lowerTrim(m.String(), "SEQUENCE_MODE_")
}

func lowerTrim(s, prefix string) string {
	s, _ = cutPrefix(s, prefix)
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// View is what the JSON endpoint returns.
type View struct {
	NowMs      int64                     `json:"now_ms"`
	IntervalMs int64                     `json:"interval_ms"`
	WindowMs   int64                     `json:"window_ms"`
	Samples    []Sample                  `json:"samples"`
	Sources    []SourceRow               `json:"sources"`
	Commits    []server.CommitRecord     `json:"commits"` // newest first
	Tables     []string                  `json:"tables"`  // every table in Samples' CommitsByTable, sorted
	Status     *lakehousev1.ServerStatus `json:"-"`
}

// recentCommitsShown bounds View.Commits.
const recentCommitsShown = 50

// Snapshot returns the samples taken after sinceMs (all when 0), the latest
// source rows, recent commits and status.
func (h *History) Snapshot(sinceMs int64) View {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := View{
		NowMs:      h.cfg.Now().UnixMilli(),
		IntervalMs: h.cfg.Interval.Milliseconds(),
		WindowMs:   h.cfg.Window.Milliseconds(),
		Sources:    append([]SourceRow{}, h.sources...),
		Status:     h.status,
		Samples:    []Sample{},
		Commits:    []server.CommitRecord{},
	}
	i := sort.Search(len(h.samples), func(i int) bool { return h.samples[i].T > sinceMs })
	v.Samples = append(v.Samples, h.samples[i:]...)
	tables := map[string]bool{}
	for _, s := range h.samples {
		for t := range s.CommitsByTable {
			tables[t] = true
		}
	}
	for t := range tables {
		v.Tables = append(v.Tables, t)
	}
	sort.Strings(v.Tables)
	for i := len(h.commits) - 1; i >= 0 && len(v.Commits) < recentCommitsShown; i-- {
		v.Commits = append(v.Commits, h.commits[i])
	}
	return v
}
