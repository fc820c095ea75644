package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemoryIntervalDefault is how often a MemoryProbe samples: the status
// page's cadence. A maintenance pass's peak lasts seconds, so a sparser
// sample misses it; a scrape of /metrics costs the server about a
// millisecond.
const MemoryIntervalDefault = 2 * time.Second

// MemoryReport is the server's resident set size (RSS) over a run, sampled
// while it ran: what the sustained-load goal bounds (the memory buffer cap
// plus 150 MB).
type MemoryReport struct {
	// Samples is the number of readings; IntervalSeconds their spacing.
	Samples         int     `json:"samples"`
	IntervalSeconds float64 `json:"intervalSeconds"`
	// MedianBytes and MaxBytes are the median and the highest reading.
	MedianBytes int64 `json:"medianBytes"`
	MaxBytes    int64 `json:"maxBytes"`
	// Source says where the readings come from.
	Source string `json:"source"`
}

// String formats the report as part of a line.
func (r *MemoryReport) String() string {
	const mib = 1 << 20
	return fmt.Sprintf("server RSS median %.0f MiB, max %.0f MiB (%d samples every %gs, %s)",
		float64(r.MedianBytes)/mib, float64(r.MaxBytes)/mib, r.Samples, r.IntervalSeconds, r.Source)
}

// MemoryProbe samples the server's RSS during a run.
type MemoryProbe struct {
	// MetricsAddr is the server's HTTP address (host:port) whose /metrics
	// gives process_resident_memory_bytes. Empty: the server's RSS is not
	// read, unless InProcess.
	MetricsAddr string
	// InProcess says the server runs in this process: its RSS is the
	// process's (server and generator together; Linux only).
	InProcess bool
	// Interval is the time between readings; 0: MemoryIntervalDefault.
	Interval time.Duration
}

// MemorySampling is a probe sampling until Stop.
type MemorySampling struct {
	p      MemoryProbe
	source string
	read   func(context.Context) (int64, error)
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	samples []int64
}

// Start begins sampling at once and then every Interval, on a goroutine of
// its own, until Stop. A reading that fails is skipped: the run's other
// figures do not depend on it. With nothing to read it returns nil, which
// Stop accepts.
func (p MemoryProbe) Start(ctx context.Context) *MemorySampling {
	s := &MemorySampling{p: p, done: make(chan struct{})}
	switch {
	case p.MetricsAddr != "":
		s.source = "process_resident_memory_bytes of " + p.MetricsAddr
		s.read = func(ctx context.Context) (int64, error) {
			v, err := scrapeMetric(ctx, p.MetricsAddr, "process_resident_memory_bytes")
			return int64(v), err
		}
	case p.InProcess && selfRSSSupported:
		s.source = "this process's RSS: in-process server and generator together"
		s.read = func(context.Context) (int64, error) { return selfRSS() }
	default:
		return nil
	}
	if s.p.Interval <= 0 {
		s.p.Interval = MemoryIntervalDefault
	}
	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx)
	return s
}

func (s *MemorySampling) run(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.p.Interval)
	defer t.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *MemorySampling) sample(ctx context.Context) {
	v, err := s.read(ctx)
	if err != nil || v <= 0 {
		return
	}
	s.mu.Lock()
	s.samples = append(s.samples, v)
	s.mu.Unlock()
}

// Stop takes a last reading, ends the sampling and reports it; nil when no
// reading succeeded (or s is nil).
func (s *MemorySampling) Stop(ctx context.Context) *MemoryReport {
	if s == nil {
		return nil
	}
	s.cancel()
	<-s.done
	s.sample(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return nil
	}
	sorted := slices.Sorted(slices.Values(s.samples))
	return &MemoryReport{
		Samples:         len(sorted),
		IntervalSeconds: s.p.Interval.Seconds(),
		MedianBytes:     sorted[len(sorted)/2],
		MaxBytes:        sorted[len(sorted)-1],
		Source:          s.source,
	}
}
