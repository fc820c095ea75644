// Package bench is the load generator behind `lakehouse bench`: it drives N
// concurrent client.Clients with workload W1 (DESIGN.md) and reports
// throughput and latency, and it measures a raw gRPC stream baseline (the
// same binary_batch bytes, no client machinery) so the client's overhead can
// be stated as a ratio.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// DefaultGrace is the default of Config.Grace.
const DefaultGrace = 30 * time.Second

// Config configures a run.
type Config struct {
	// Addr is the server's host:port. Required (a caller that wants an
	// in-process server starts it and passes its address).
	Addr string
	// Sources is the number of concurrent sources, one client each. Default 1.
	Sources int
	// Duration bounds the sending time (the run then waits for the acks of
	// what was sent). Zero: no bound, Entries must be set.
	Duration time.Duration
	// Entries is the total number of entries to send, split evenly over the
	// sources (each sends whole batches). Zero: no bound, Duration must be set.
	Entries int64
	// BatchSize is the number of entries per batch. Default 1,000 (W1).
	BatchSize int
	// MaxPending is each client's pending-batch limit (client mode).
	// Default 8: enough pipelining to keep the server busy while bounding
	// memory (the client's own default, 100 batches of 1,000 W1 entries, is
	// about 21 MB per source, 1.3 GB for 64 sources).
	MaxPending int
	// Progress, when set, receives a progress line every ProgressInterval.
	Progress io.Writer
	// ProgressInterval defaults to 1 s.
	ProgressInterval time.Duration
	// SourcePrefix prefixes the source ids ("bench-<unix ms>" by default, so
	// runs against a long-lived server do not resume each other's sources).
	SourcePrefix string
	// ClientOptions are added to every client's options.
	ClientOptions []client.Option
	// DialOptions are added to the plain gRPC connections of the raw and
	// frames modes (TLS, token); clients take theirs from ClientOptions.
	DialOptions []grpc.DialOption
	// TablePrefix prefixes the W1 table names ("bench_users"...), so that a
	// run against a real data directory keeps its rows out of real tables.
	// Empty: the plain W1 names.
	TablePrefix string
	// Rate, for Frames: entries/s offered by all sources together in an
	// open loop. Zero: a closed loop of MaxPending batches per source.
	Rate float64
	// Grace bounds the waits for acks, so that a run against a server that
	// stopped answering ends and says so: after the sending window, the
	// run waits at most Grace for the outstanding acks; and at any time,
	// once no ack has come for Grace, sending stops. What is then left
	// unacknowledged is reported in Summary.UnackedBatches and
	// UnackedEntries. Default DefaultGrace.
	Grace time.Duration
	// Workload is WorkloadW1 (default) or WorkloadKeyed (client and
	// frames modes).
	Workload string
	// Keys is the keyed workload's key space; default
	// workload.DefaultKeyedKeys.
	Keys int
}

// Summary is the result of a run. Its JSON form is one object.
type Summary struct {
	// Mode is "client", "raw" or "frames".
	Mode string `json:"mode"`
	// TargetEntriesPerSec is the open loop's offered rate (frames with a
	// rate), 0 for a closed loop.
	TargetEntriesPerSec float64 `json:"targetEntriesPerSec,omitempty"`
	// Sources is the number of concurrent sources.
	Sources int `json:"sources"`
	// BatchSize is the number of entries per batch.
	BatchSize int `json:"batchSize"`
	// MaxPending is the clients' pending-batch limit (client mode).
	MaxPending int `json:"maxPending,omitempty"`
	// Seconds is the wall time from the first send to the last ack.
	Seconds float64 `json:"seconds"`
	// Entries and Batches count what the server acknowledged (duplicates
	// included once).
	Entries uint64 `json:"entries"`
	// Batches counts acknowledged batches.
	Batches uint64 `json:"batches"`
	// Bytes counts the W1 encoded bytes (cdc_batch frames) acknowledged.
	Bytes uint64 `json:"bytes"`
	// EntriesPerSec is Entries / Seconds.
	EntriesPerSec float64 `json:"entriesPerSec"`
	// MBPerSec is Bytes / Seconds in MB (10^6 bytes).
	MBPerSec float64 `json:"mbPerSec"`
	// SendSeconds is the length of the sending window (Duration, or until
	// the last batch was handed over).
	SendSeconds float64 `json:"sendSeconds"`
	// WindowEntriesPerSec is the entries acknowledged by the end of the
	// sending window over its length: the sustained rate, without the final
	// drain of pending batches.
	WindowEntriesPerSec float64 `json:"windowEntriesPerSec"`
	// WindowMBPerSec is the same for bytes.
	WindowMBPerSec float64 `json:"windowMbPerSec"`
	// SentEntries counts entries handed to the stream (raw mode: sent
	// whatever the answer; client mode: first transmissions).
	SentEntries uint64 `json:"sentEntries"`
	// AckLatency digests send-to-ack latencies (in an open loop, from each
	// batch's scheduled send time).
	AckLatency client.LatencySummary `json:"ackLatency"`
	// PersistedLatency digests send-to-persisted latencies (batches whose
	// Persisted watermark arrived during the run).
	PersistedLatency client.LatencySummary `json:"persistedLatency"`
	// Nacks counts nacks by reason.
	Nacks map[string]uint64 `json:"nacks,omitempty"`
	// StaleNacks counts nacks of pipelined batches behind a refused one:
	// the expected echo of a refusal (the server takes a stream's batches
	// in order), sent again, not counted in Nacks and not errors.
	StaleNacks uint64 `json:"staleNacks,omitempty"`
	// Retried counts retransmissions.
	Retried uint64 `json:"retried"`
	// Duplicates counts batches the server already had.
	Duplicates uint64 `json:"duplicates"`
	// Reconnects counts reconnections.
	Reconnects uint64 `json:"reconnects"`
	// Errors counts errors (given-up batches, failed clients).
	Errors int `json:"errors"`
	// ErrorMessages holds the first few errors.
	ErrorMessages []string `json:"errorMessages,omitempty"`
	// UnackedBatches and UnackedEntries count what was never acknowledged:
	// batches given up on (client mode: reported as client.BatchError, for
	// example after the grace period) or left without any answer (raw and
	// frames modes).
	UnackedBatches uint64 `json:"unackedBatches"`
	UnackedEntries uint64 `json:"unackedEntries"`
	// CPU is the CPU time the run cost, when measured (see CPUProbe).
	CPU *CPUReport `json:"cpu,omitempty"`
	// Memory is the server's RSS over the run, when sampled (see
	// MemoryProbe).
	Memory *MemoryReport `json:"memory,omitempty"`
	// Freshness is the mirror freshness measured beside the run, if any
	// (ProbeFreshness).
	Freshness *FreshnessReport `json:"freshness,omitempty"`
}

// String formats the summary as one human-readable line.
func (s *Summary) String() string {
	var b strings.Builder
	if s.TargetEntriesPerSec > 0 {
		fmt.Fprintf(&b, "open loop at %.0f entries/s, ", s.TargetEntriesPerSec)
	}
	fmt.Fprintf(&b, "%s: %d sources, %d entries in %.2fs: %.0f entries/s, %.2f MB/s (sending window %.2fs: %.0f entries/s, %.2f MB/s), ack p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms",
		s.Mode, s.Sources, s.Entries, s.Seconds, s.EntriesPerSec, s.MBPerSec, s.SendSeconds, s.WindowEntriesPerSec, s.WindowMBPerSec,
		s.AckLatency.P50Ms, s.AckLatency.P90Ms, s.AckLatency.P99Ms, s.AckLatency.MaxMs)
	if s.PersistedLatency.Count > 0 {
		fmt.Fprintf(&b, ", persisted p50 %.0fms p99 %.0fms max %.0fms", s.PersistedLatency.P50Ms, s.PersistedLatency.P99Ms, s.PersistedLatency.MaxMs)
	}
	if len(s.Nacks) > 0 {
		fmt.Fprintf(&b, ", nacks %v", s.Nacks)
	}
	if s.StaleNacks > 0 {
		fmt.Fprintf(&b, ", %d stale nacks (batches in flight behind a refused one, sent again)", s.StaleNacks)
	}
	if s.Retried > 0 {
		fmt.Fprintf(&b, ", retried %d", s.Retried)
	}
	if s.Errors > 0 {
		fmt.Fprintf(&b, ", %d errors", s.Errors)
		if len(s.ErrorMessages) > 0 {
			fmt.Fprintf(&b, " (first: %s)", s.ErrorMessages[0])
		}
	}
	if s.UnackedEntries > 0 || s.UnackedBatches > 0 {
		fmt.Fprintf(&b, ", UNACKNOWLEDGED: %d entries in %d batches", s.UnackedEntries, s.UnackedBatches)
	}
	if s.CPU != nil {
		b.WriteString("; ")
		b.WriteString(s.CPU.String())
	}
	if s.Memory != nil {
		b.WriteString("; ")
		b.WriteString(s.Memory.String())
	}
	if s.Freshness != nil {
		b.WriteString("; ")
		b.WriteString(s.Freshness.String())
	}
	return b.String()
}

func (c *Config) normalize() error {
	if c.Addr == "" {
		return errors.New("bench: no server address")
	}
	if c.Sources <= 0 {
		c.Sources = 1
	}
	if c.BatchSize <= 0 {
		c.BatchSize = workload.W1BatchSize
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 8
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	switch {
	case c.Grace < 0:
		return fmt.Errorf("bench: grace %v must be positive", c.Grace)
	case c.Grace == 0:
		c.Grace = DefaultGrace
	}
	if c.Duration <= 0 && c.Entries <= 0 {
		return errors.New("bench: set a duration or a number of entries")
	}
	if err := c.normalizeWorkload(); err != nil {
		return err
	}
	if c.SourcePrefix == "" {
		c.SourcePrefix = fmt.Sprintf("bench-%d", time.Now().UnixMilli())
	}
	return nil
}

// batchesPerSource returns how many batches each source sends (0: unbounded).
func (c *Config) batchesPerSource() int64 {
	if c.Entries <= 0 {
		return 0
	}
	per := c.Entries / int64(c.Sources)
	return max(1, (per+int64(c.BatchSize)-1)/int64(c.BatchSize))
}

// errorList collects errors, keeping the first few messages.
type errorList struct {
	mu   sync.Mutex
	n    int
	msgs []string
}

func (e *errorList) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.msgs) < 10 {
		e.msgs = append(e.msgs, err.Error())
	}
}

// Run drives cfg.Sources clients with W1 batches (source i numbers its own
// entries 1, 2, 3...) until cfg.Duration has passed or cfg.Entries are sent,
// waits for the acks, closes the clients and returns the summary. It returns
// an error only when the run could not be made (no server, bad config);
// failures during the run are counted in the summary.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	makeBatch, err := cfg.batchMaker()
	if err != nil {
		return nil, err
	}
	var (
		entries, batches, bytes atomic.Uint64
		acks                    atomic.Uint64 // acks received: progress, for watchStall
		unackedB, unackedE      atomic.Uint64
		errs                    errorList
	)
	opts := append([]client.Option{
		client.OnAck(func(a client.Ack) {
			acks.Add(1)
			entries.Add(uint64(a.Entries))
			batches.Add(1)
			bytes.Add(uint64(a.Bytes))
		}),
		client.OnError(func(err error) {
			var be *client.BatchError
			if errors.As(err, &be) {
				unackedB.Add(1)
				unackedE.Add(uint64(len(be.Entries)))
			}
			errs.add(err)
		}),
		client.WithMaxBatchEntries(cfg.BatchSize),
		client.WithMaxPendingBatches(cfg.MaxPending),
	}, cfg.ClientOptions...)
	clients := make([]*client.Client, cfg.Sources)
	for i := range clients {
		c, err := client.Dial(ctx, cfg.Addr, fmt.Sprintf("%s-%d", cfg.SourcePrefix, i), opts...)
		if err != nil {
			for _, c := range clients[:i] {
				_ = c.Close(context.Background())
			}
			return nil, fmt.Errorf("bench: %w", err)
		}
		clients[i] = c
	}

	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(sendCtx, cfg.Duration)
		defer cancel()
	}
	start := time.Now()
	stopWatch := watchStall(cfg.Grace, acks.Load, func() {
		errs.add(fmt.Errorf("bench: no ack for %v (--grace): sending stopped", cfg.Grace))
		cancelSend()
	})
	defer stopWatch()
	stopProgress := startProgress(cfg, start, "", func() progressSample {
		p := progressSample{entries: entries.Load(), bytes: bytes.Load()}
		for _, c := range clients {
			st := c.Stats()
			p.pending += st.PendingBatches
			p.batches += st.BatchesAcked
			for _, v := range st.Nacks {
				p.nacks += v
			}
		}
		return p
	})
	limit := cfg.batchesPerSource()
	var wg sync.WaitGroup
	for src, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int64(0); limit == 0 || k < limit; k++ {
				if sendCtx.Err() != nil {
					return
				}
				batch := makeBatch(src, k)
				for {
					err := c.SendMany(sendCtx, batch)
					if err == nil {
						break
					}
					if sendCtx.Err() != nil {
						return
					}
					if !errors.Is(err, client.ErrCircuitOpen) {
						errs.add(err)
						return
					}
					time.Sleep(100 * time.Millisecond) // nothing was accepted: retry the batch
				}
			}
		}()
	}
	wg.Wait()
	stopWatch()
	sendSecs := time.Since(start).Seconds()
	winEntries, winBytes := entries.Load(), bytes.Load()
	// Drain: wait for every ack, at most the grace period; Close gives up
	// on what is still pending then (reported to OnError as BatchErrors).
	drainCtx, cancelDrain := context.WithTimeout(ctx, cfg.Grace)
	defer cancelDrain()
	var cwg sync.WaitGroup
	for _, c := range clients {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			if err := c.Close(drainCtx); err != nil {
				addUnreported(&errs, err)
			}
		}()
	}
	cwg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	s := &Summary{
		Mode:       "client",
		Sources:    cfg.Sources,
		BatchSize:  cfg.BatchSize,
		MaxPending: cfg.MaxPending,
		Seconds:    elapsed.Seconds(),
		Entries:    entries.Load(),
		Batches:    batches.Load(),
		Bytes:      bytes.Load(),
	}
	var ackH, persH client.Histogram
	for _, c := range clients {
		st := c.Stats()
		a, p := c.LatencyHistograms()
		ackH.Merge(&a)
		persH.Merge(&p)
		s.SentEntries += st.EntriesSent
		s.Retried += st.BatchesRetried
		s.Duplicates += st.Duplicates
		s.Reconnects += st.Reconnects
		s.StaleNacks += st.StaleNacks
		for k, v := range st.Nacks {
			if s.Nacks == nil {
				s.Nacks = map[string]uint64{}
			}
			s.Nacks[k] += v
		}
	}
	s.AckLatency = ackH.Summary()
	s.PersistedLatency = persH.Summary()
	s.UnackedBatches, s.UnackedEntries = unackedB.Load(), unackedE.Load()
	s.window(sendSecs, winEntries, winBytes)
	s.finish(&errs)
	return s, nil
}

// watchStall calls onStall once progress has not changed for grace, and
// returns a function that stops watching.
func watchStall(grace time.Duration, progress func() uint64, onStall func()) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(min(grace/4, time.Second))
		defer t.Stop()
		last, since := progress(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if p := progress(); p != last {
					last, since = p, now
				} else if now.Sub(since) >= grace {
					onStall()
					return
				}
			}
		}
	}()
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

func (s *Summary) window(secs float64, entries, bytes uint64) {
	s.SendSeconds = secs
	if secs > 0 {
		s.WindowEntriesPerSec = float64(entries) / secs
		s.WindowMBPerSec = float64(bytes) / 1e6 / secs
	}
}

func (s *Summary) finish(errs *errorList) {
	if s.Seconds > 0 {
		s.EntriesPerSec = float64(s.Entries) / s.Seconds
		s.MBPerSec = float64(s.Bytes) / 1e6 / s.Seconds
	}
	errs.mu.Lock()
	s.Errors, s.ErrorMessages = errs.n, errs.msgs
	errs.mu.Unlock()
}

// progressSample is what a progress line reports, cumulative since start.
type progressSample struct {
	entries, bytes uint64 // acknowledged
	batches        uint64 // acknowledged
	pending        int    // sent or queued, not yet acknowledged
	nacks          uint64
}

// startProgress prints a progress line every interval, from what sample
// returns, until the returned function is called.
func startProgress(cfg Config, start time.Time, label string, sample func() progressSample) func() {
	if cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(cfg.ProgressInterval)
		defer t.Stop()
		var prev progressSample
		last := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				p := sample()
				dt := now.Sub(last).Seconds()
				fmt.Fprintf(cfg.Progress, "%6.1fs  %s%10.0f entries/s  %7.2f MB/s  acked %d entries (%d batches)  pending %d  nacks %d\n",
					now.Sub(start).Seconds(), label, float64(p.entries-prev.entries)/dt, float64(p.bytes-prev.bytes)/1e6/dt,
					p.entries, p.batches, p.pending, p.nacks)
				prev, last = p, now
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// addUnreported adds the parts of a Close error that OnError did not already
// report (given-up batches and the client's failure are reported there).
func addUnreported(errs *errorList, err error) {
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var be *client.BatchError
		if errors.As(e, &be) || errors.Is(e, client.ErrFailed) {
			continue
		}
		errs.add(e)
	}
}
