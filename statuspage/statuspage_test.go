package statuspage

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/server"
)

// fakeServer stands in for the server: a status and the server's counters
// on a registry, as /metrics has them.
type fakeServer struct {
	mu      sync.Mutex
	st      *lakehousev1.ServerStatus
	commits []server.CommitRecord

	reg     *prometheus.Registry
	batches *prometheus.CounterVec
	entries prometheus.Counter
	bytes   prometheus.Counter
	flushes *prometheus.CounterVec
	commit  prometheus.Histogram
}

func newFake() *fakeServer {
	f := &fakeServer{reg: prometheus.NewRegistry(), st: &lakehousev1.ServerStatus{}}
	f.batches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lakehouse_batches_total"}, []string{"result"})
	f.entries = prometheus.NewCounter(prometheus.CounterOpts{Name: "lakehouse_entries_accepted_total"})
	f.bytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "lakehouse_batch_bytes_accepted_total"})
	f.flushes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lakehouse_flushes_total"}, []string{"result"})
	f.commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lakehouse_commit_seconds"})
	f.reg.MustRegister(f.batches, f.entries, f.bytes, f.flushes, f.commit)
	return f
}

func (f *fakeServer) status() *lakehousev1.ServerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeServer) recent() []server.CommitRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]server.CommitRecord(nil), f.commits...)
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestHistoryRatesLagAndWindow(t *testing.T) {
	f := newFake()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	h := NewHistory(HistoryConfig{Status: f.status, Gatherer: f.reg, Commits: f.recent, Interval: 2 * time.Second, Window: 10 * time.Second, Now: clk.now})

	src := &lakehousev1.SourceStatus{SourceId: "s1", LastSequence: 5, PersistedSequence: 5, EntriesReceived: 5000}
	f.st = &lakehousev1.ServerStatus{Sources: []*lakehousev1.SourceStatus{src},
		Buffer: &lakehousev1.BufferStats{Utilization: 0.25, TotalSizeBytes: 100},
		Wal:    &lakehousev1.WALStats{SizeBytes: 4096, CapBytes: 1 << 30}}
	h.Sample()

	// 2 s later: 4,000 entries and 4 batches (3 ok, 1 buffered), one
	// buffer_full nack, one commit of 0.5 s to two tables.
	clk.t = clk.t.Add(2 * time.Second)
	f.entries.Add(4000)
	f.bytes.Add(800_000)
	f.batches.WithLabelValues("ok").Add(3)
	f.batches.WithLabelValues("buffered").Add(1)
	f.batches.WithLabelValues("nack_buffer_full").Add(1)
	f.flushes.WithLabelValues("success").Inc()
	f.commit.Observe(0.5)
	f.commits = []server.CommitRecord{
		{TimeMs: clk.t.UnixMilli() - 100, Table: "users", SnapshotID: 1 << 60, Rows: 10, Trigger: "scheduled"},
		{TimeMs: clk.t.UnixMilli() - 100, Table: "orders", SnapshotID: 7, Rows: 20, Trigger: "scheduled"},
	}
	src = &lakehousev1.SourceStatus{SourceId: "s1", LastSequence: 9, PersistedSequence: 5, EntriesReceived: 9000, Connected: true}
	f.st = &lakehousev1.ServerStatus{Sources: []*lakehousev1.SourceStatus{src}}
	h.Sample()

	v := h.Snapshot(0)
	if len(v.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(v.Samples))
	}
	s := v.Samples[1]
	if s.EntriesPerSec != 2000 || s.BytesPerSec != 400_000 {
		t.Fatalf("rates %v entries/s %v B/s, want 2000 and 400000", s.EntriesPerSec, s.BytesPerSec)
	}
	if s.Acks["ok"] != 1.5 || s.Acks["buffered"] != 0.5 || s.Nacks["buffer_full"] != 0.5 {
		t.Fatalf("acks %v nacks %v", s.Acks, s.Nacks)
	}
	if s.Commits != 1 || s.CommitSeconds != 0.5 || s.CommitsByTable["users"] != 1 || s.CommitsByTable["orders"] != 1 {
		t.Fatalf("commits %v latency %v by table %v", s.Commits, s.CommitSeconds, s.CommitsByTable)
	}
	if v.Samples[0].BufferUtilization != 0.25 || v.Samples[0].WALBytes != 4096 {
		t.Fatalf("gauges %+v", v.Samples[0])
	}
	row := v.Sources[0]
	if row.LagBatches != 4 || row.LagSeconds != 0 || row.EntriesPerSec != 2000 || !row.Connected {
		t.Fatalf("source row %+v", row)
	}
	if len(v.Commits) != 2 || v.Commits[0].Table != "orders" || strings.Join(v.Tables, ",") != "orders,users" {
		t.Fatalf("commits %+v tables %v", v.Commits, v.Tables)
	}

	// Lag in seconds grows while batch 6 waits, and clears once persisted.
	clk.t = clk.t.Add(2 * time.Second)
	h.Sample()
	if got := h.Snapshot(0).Sources[0].LagSeconds; got != 2 {
		t.Fatalf("lag %v s, want 2", got)
	}
	src.PersistedSequence = 9
	clk.t = clk.t.Add(2 * time.Second)
	h.Sample()
	if got := h.Snapshot(0).Sources[0]; got.LagSeconds != 0 || got.LagBatches != 0 {
		t.Fatalf("lag after persisting: %+v", got)
	}

	// The window keeps Window/Interval+1 samples; since filters.
	for range 10 {
		clk.t = clk.t.Add(2 * time.Second)
		h.Sample()
	}
	v = h.Snapshot(0)
	if len(v.Samples) != 6 {
		t.Fatalf("%d samples kept, want 6", len(v.Samples))
	}
	if got := h.Snapshot(v.Samples[3].T); len(got.Samples) != 2 {
		t.Fatalf("since: %d samples, want 2", len(got.Samples))
	}
}

func TestHandlerRoutes(t *testing.T) {
	f := newFake()
	h := NewHistory(HistoryConfig{Status: f.status, Gatherer: f.reg, Commits: f.recent})
	f.commits = []server.CommitRecord{{TimeMs: 1, Table: "users", SnapshotID: 1<<62 + 1, Rows: 3}}
	h.Sample()
	var nextPaths []string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nextPaths = append(nextPaths, r.Method+" "+r.URL.Path)
		io.WriteString(w, "bridge")
	})
	ts := httptest.NewServer(Handler(h, next))
	defer ts.Close()

	get := func(path string, hdr map[string]string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ct, body := get("/", nil); code != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "/ui/app.js") {
		t.Fatalf("GET /: %d %s %.80q", code, ct, body)
	}
	for _, p := range []string{"/ui/app.js", "/ui/style.css"} {
		if code, _, body := get(p, nil); code != 200 || len(body) < 100 {
			t.Fatalf("GET %s: %d", p, code)
		}
	}
	code, ct, body := get(HistoryPath, nil)
	if code != 200 || ct != "application/json" {
		t.Fatalf("GET %s: %d %s", HistoryPath, code, ct)
	}
	var v struct {
		Samples []Sample          `json:"samples"`
		Commits []json.RawMessage `json:"commits"`
		Status  map[string]any    `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Samples) != 1 || v.Status == nil {
		t.Fatalf("history: %v %s", err, body)
	}
	// Snapshot ids do not fit a JavaScript number: they are strings.
	if !strings.Contains(string(v.Commits[0]), `"snapshot_id":"4611686018427387905"`) {
		t.Fatalf("commit %s", v.Commits[0])
	}
	if code, _, _ := get(HistoryPath+"?since=x", nil); code != 400 {
		t.Fatalf("bad since: %d", code)
	}
	// Everything else reaches the bridge: WebSocket upgrades on / and any
	// path, its endpoints, other methods.
	get("/", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"})
	get("/some/path", map[string]string{"Upgrade": "WebSocket", "Connection": "Upgrade"})
	get("/status", nil)
	get("/health", nil)
	resp, err := http.Post(ts.URL+"/flush", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "GET /,GET /some/path,GET /status,GET /health,POST /flush"
	if got := strings.Join(nextPaths, ","); got != want {
		t.Fatalf("reached the bridge: %s; want %s", got, want)
	}
}
