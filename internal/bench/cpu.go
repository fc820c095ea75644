package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CPUReport is the CPU time a run cost, per million acknowledged entries.
type CPUReport struct {
	// Entries is the number of entries the figures are divided by.
	Entries uint64 `json:"entries"`
	// ServerSeconds is the server's CPU time over the run, from its
	// process_cpu_seconds_total; with an in-process server, the process's
	// (server and generator together). Zero when not measured.
	ServerSeconds float64 `json:"serverSeconds,omitempty"`
	// ServerPerMillion is ServerSeconds per million entries.
	ServerPerMillion float64 `json:"serverPerMillionEntries,omitempty"`
	// ServerSource says where ServerSeconds comes from.
	ServerSource string `json:"serverSource,omitempty"`
	// GeneratorSeconds is the load generator's CPU time (this process's
	// rusage), when the server runs elsewhere.
	GeneratorSeconds float64 `json:"generatorSeconds,omitempty"`
	// GeneratorPerMillion is GeneratorSeconds per million entries.
	GeneratorPerMillion float64 `json:"generatorPerMillionEntries,omitempty"`
	// WallSeconds is the wall time between the two readings.
	WallSeconds float64 `json:"wallSeconds"`
	// Note qualifies the figures (for example: the flush after the run
	// failed, so the server's figure may leave part of the run's cost out).
	Note string `json:"note,omitempty"`
}

// String formats the report as one line.
func (r *CPUReport) String() string {
	var b strings.Builder
	if r.ServerSource != "" {
		fmt.Fprintf(&b, "server CPU %.1fs, %.2f CPU-s per million entries (%s)", r.ServerSeconds, r.ServerPerMillion, r.ServerSource)
	}
	if r.GeneratorSeconds > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "generator CPU %.1fs, %.2f CPU-s per million entries", r.GeneratorSeconds, r.GeneratorPerMillion)
	}
	if r.Note != "" {
		fmt.Fprintf(&b, " (%s)", r.Note)
	}
	return b.String()
}

// CPUProbe reads the CPU time of the server and of the generator.
type CPUProbe struct {
	// MetricsAddr is the server's HTTP address (host:port) whose /metrics
	// gives process_cpu_seconds_total. Empty: the server's CPU is not read,
	// unless InProcess.
	MetricsAddr string
	// InProcess says the server runs in this process: the process's rusage
	// is then the server's and the generator's CPU together.
	InProcess bool
}

// CPUStart is a probe's first reading.
type CPUStart struct {
	p      CPUProbe
	at     time.Time
	self   float64
	server float64
}

// Start takes the first reading.
func (p CPUProbe) Start(ctx context.Context) (*CPUStart, error) {
	s := &CPUStart{p: p, at: time.Now(), self: selfCPU()}
	if p.MetricsAddr != "" {
		v, err := ScrapeCPU(ctx, p.MetricsAddr)
		if err != nil {
			return nil, err
		}
		s.server = v
	}
	return s, nil
}

// Stop takes the second reading and reports the difference over entries.
func (s *CPUStart) Stop(ctx context.Context, entries uint64) (*CPUReport, error) {
	self := selfCPU() - s.self
	r := &CPUReport{Entries: entries, WallSeconds: time.Since(s.at).Seconds()}
	perM := func(sec float64) float64 {
		if entries == 0 {
			return 0
		}
		return sec / float64(entries) * 1e6
	}
	switch {
	case s.p.MetricsAddr != "":
		v, err := ScrapeCPU(ctx, s.p.MetricsAddr)
		if err != nil {
			return nil, err
		}
		r.ServerSeconds, r.ServerSource = v-s.server, "process_cpu_seconds_total of "+s.p.MetricsAddr
		r.GeneratorSeconds = self
	case s.p.InProcess:
		r.ServerSeconds, r.ServerSource = self, "rusage of this process: in-process server and generator together"
	default:
		r.GeneratorSeconds = self
	}
	r.ServerPerMillion, r.GeneratorPerMillion = perM(r.ServerSeconds), perM(r.GeneratorSeconds)
	return r, nil
}

// ScrapeCPU reads process_cpu_seconds_total from http://addr/metrics.
func ScrapeCPU(ctx context.Context, addr string) (float64, error) {
	return scrapeMetric(ctx, addr, "process_cpu_seconds_total")
}

// scrapeMetric reads the value of the metric name, one without labels, from
// http://addr/metrics (Prometheus' text format).
func scrapeMetric(ctx context.Context, addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: server metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bench: server metrics: %s from http://%s/metrics", resp.Status, addr)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: server metrics: %w", err)
	}
	return 0, fmt.Errorf("bench: no %s at http://%s/metrics", name, addr)
}
