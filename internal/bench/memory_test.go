package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryProbeReadsServerMetrics: the probe samples the server's
// process_resident_memory_bytes while the run goes and reports the median
// and the peak, which a reading at the start and the end would miss.
func TestMemoryProbeReadsServerMetrics(t *testing.T) {
	values := []float64{100e6, 300e6, 200e6} // then 200e6 for every later scrape
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := min(int(scrapes.Add(1))-1, len(values)-1)
		fmt.Fprintf(w, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes_x 1\nprocess_resident_memory_bytes %g\n", values[i])
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	s := MemoryProbe{MetricsAddr: addr, Interval: 5 * time.Millisecond}.Start(t.Context())
	for deadline := time.Now().Add(10 * time.Second); scrapes.Load() < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("%d scrapes in 10 s at an interval of 5 ms", scrapes.Load())
		}
		time.Sleep(time.Millisecond)
	}
	r := s.Stop(t.Context())
	if r == nil || r.Samples < 5 || r.MedianBytes != 200e6 || r.MaxBytes != 300e6 {
		t.Fatalf("report %+v, want at least 5 samples, median 200e6, max 300e6", r)
	}
	if got := r.String(); !strings.Contains(got, "median 191 MiB, max 286 MiB") || !strings.Contains(got, addr) {
		t.Fatalf("report reads %q", got)
	}
}

// TestMemoryProbeWithoutReadings: a server without the metric gives no
// report rather than zeros, and a probe with nothing to read is nil.
func TestMemoryProbeWithoutReadings(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "process_cpu_seconds_total 3")
	}))
	defer srv.Close()
	s := MemoryProbe{MetricsAddr: strings.TrimPrefix(srv.URL, "http://"), Interval: time.Millisecond}.Start(t.Context())
	time.Sleep(20 * time.Millisecond)
	if r := s.Stop(t.Context()); r != nil {
		t.Fatalf("report %+v from a server without process_resident_memory_bytes", r)
	}
	if s := (MemoryProbe{}).Start(t.Context()); s != nil || s.Stop(t.Context()) != nil {
		t.Fatal("a probe with nothing to read sampled something")
	}
}

// TestMemoryProbeInProcess reads this process's own RSS (Linux).
func TestMemoryProbeInProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the process's RSS is read on Linux only")
	}
	s := MemoryProbe{InProcess: true, Interval: time.Millisecond}.Start(t.Context())
	time.Sleep(10 * time.Millisecond)
	r := s.Stop(t.Context())
	if r == nil || r.Samples < 2 || r.MaxBytes < 1<<20 || r.MedianBytes > r.MaxBytes {
		t.Fatalf("report %+v", r)
	}
}
