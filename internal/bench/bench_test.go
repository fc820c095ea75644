package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
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
