package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func quiet(c *server.Config) { c.Logger = slog.New(slog.DiscardHandler) }

func TestRunCountsEveryEntry(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	var progress bytes.Buffer
	s, err := Run(context.Background(), Config{
		Addr: in.Addr, Sources: 3, Entries: 9000, BatchSize: 500,
		Progress: &progress, ProgressInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries != 9000 || s.Batches != 18 || s.Errors != 0 || s.Bytes == 0 || s.EntriesPerSec <= 0 || s.AckLatency.Count != 18 {
		t.Fatalf("summary %+v", s)
	}
	// W1 averages about 210 bytes per entry.
	if per := float64(s.Bytes) / float64(s.Entries); per < 150 || per > 260 {
		t.Fatalf("%.0f bytes per entry", per)
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"entriesPerSec"`, `"mbPerSec"`, `"ackLatency"`, `"p99Ms"`} {
		if !strings.Contains(string(js), k) {
			t.Fatalf("JSON lacks %s: %s", k, js)
		}
	}
	t.Log(s)
	in.Stop()
	if n := len(in.Records()); n != 9000 {
		t.Fatalf("%d rows committed", n)
	}
}

func TestRunForDuration(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	s, err := Run(context.Background(), Config{Addr: in.Addr, Sources: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries == 0 || s.Entries != s.SentEntries || s.Errors != 0 {
		t.Fatalf("summary %+v", s)
	}
}

func TestRawStream(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	s, err := RawStreamConfig(context.Background(), Config{Addr: in.Addr, Sources: 2, Entries: 6000})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != "raw" || s.Entries != 6000 || s.SentEntries != 6000 || s.Errors != 0 || s.AckLatency.Count != 6 {
		t.Fatalf("summary %+v", s)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []Config{{}, {Addr: "127.0.0.1:1"}}
	for i, cfg := range cases {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
}

func TestFramePool(t *testing.T) {
	p, err := NewFramePool("src", 100, "bench_")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int64{0, 1, framePoolSize, 3*framePoolSize + 5} {
		f := p.Frame(k, 7+uint64(k), 1000)
		b, err := codec.DecodeBatch(f, codec.DecodeOptions{StrictChecksum: true, ValidateUTF8: true, ValidateJSON: true})
		if err != nil {
			t.Fatalf("frame %d: %v", k, err)
		}
		if b.Sequence != 7+uint64(k) || len(b.Entries) != 100 || string(b.SourceID) != "src" {
			t.Fatalf("frame %d: batch %d, %d entries, source %q", k, b.Sequence, len(b.Entries), b.SourceID)
		}
		for i, e := range b.Entries {
			if want := 1000 + uint64(k)*100 + uint64(i) + 1; e.Sequence != want || !strings.HasPrefix(string(e.Table), "bench_") {
				t.Fatalf("frame %d entry %d: sequence %d (want %d), table %s", k, i, e.Sequence, want, e.Table)
			}
		}
	}
}

func TestFramesClosedLoop(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	s, err := Frames(context.Background(), Config{Addr: in.Addr, Sources: 3, Entries: 9000, BatchSize: 500, MaxPending: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != "frames" || s.Entries != 9000 || s.Batches != 18 || s.SentEntries != 9000 || s.Errors != 0 || s.AckLatency.Count != 18 {
		t.Fatalf("summary %+v", s)
	}
	in.Stop()
	if n := len(in.Records()); n != 9000 {
		t.Fatalf("%d rows committed", n)
	}
}

// TestFramesOpenLoop: an open loop offers its rate, sends again what a
// small buffer refuses, and measures persisted latency.
func TestFramesOpenLoop(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		quiet(c)
		c.FlushInterval = 100 * time.Millisecond
		c.MaxBufferBytes = 300 << 10 // about 3 batches of 500 entries
		c.RetryDelay = 20 * time.Millisecond
	}))
	s, err := Frames(context.Background(), Config{Addr: in.Addr, Sources: 2, Duration: time.Second, BatchSize: 500, Rate: 20000})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(s)
	// 20,000 entries/s for a second: 40 batches of 500, give or take the last.
	if s.Entries < 15000 || s.Entries > 21000 || s.Entries != s.SentEntries || s.Errors != 0 || s.TargetEntriesPerSec != 20000 {
		t.Fatalf("summary %+v", s)
	}
	if s.PersistedLatency.Count == 0 {
		t.Fatalf("no persisted latency: %+v", s)
	}
	in.Stop()
	if n := uint64(len(in.Records())); n != s.Entries {
		t.Fatalf("%d rows committed, %d acknowledged", n, s.Entries)
	}
}

func TestCPUProbeReadsServerMetrics(t *testing.T) {
	cpu := 10.0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"+
			"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %g\nprocess_cpu_seconds_totalx 1\n", cpu)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	start, err := CPUProbe{MetricsAddr: addr}.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cpu = 12.5
	r, err := start.Stop(t.Context(), 500000)
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerSeconds != 2.5 || r.ServerPerMillion != 5 || !strings.Contains(r.String(), "5.00 CPU-s per million") {
		t.Fatalf("report %+v: %s", r, r)
	}
	if _, err := ScrapeCPU(t.Context(), addr+"/nothing"); err == nil {
		t.Fatal("no error from a 404")
	}
}
