package server_test

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// TestRateLimitedBatchIsNotSequenced: a batch over its source's rate is
// nacked rate_limited with a retry delay and is neither sequenced nor
// stored; resent after the delay it is accepted under the same number, and
// every entry is stored once.
func TestRateLimitedBatchIsNotSequenced(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Limits.SourceRateEntries = 100 // a 100-entry burst
	}))
	ts := openStream(t, in.Dial(), "rl", 0)
	if a := ts.sendFrame(smallBatch("rl", 1, 100)).GetAck(); a == nil {
		t.Fatal("first batch (within the burst) not acked")
	}
	r := ts.sendFrame(smallBatch("rl", 2, 100))
	n := r.GetNack()
	if n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_RATE_LIMITED || !n.ShouldRetry ||
		n.RetryDelayMs < 900 || n.RetryDelayMs > 1000 || n.SequenceNumber != 2 || !strings.Contains(n.ErrorMessage, "rate limit") {
		t.Fatalf("batch over the rate: got %v, want rate_limited, retry after about 1000 ms", r)
	}
	// Not sequenced: the next number is still a gap.
	if n := ts.sendFrame(smallBatch("rl", 3, 1)).GetNack(); n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE || n.ExpectedSequence != 2 {
		t.Fatalf("batch 3 after a rate-limited 2: got %v, want invalid_sequence expecting 2", n)
	}
	time.Sleep(time.Duration(n.RetryDelayMs) * time.Millisecond)
	if a := ts.sendFrame(smallBatch("rl", 2, 100)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.Details.EntriesAccepted != 100 {
		t.Fatalf("batch 2 resent after the delay: got %v, want ok", a)
	}
	if _, err := in.Server.FlushNow(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	assertExactlyOnce(t, in, map[string]int{"rl": 200})
}

// TestMaxBatchEntries: a batch with more entries than the limit is refused
// before decoding, with a nack naming the limit, and the stream goes on.
func TestMaxBatchEntries(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Limits.MaxBatchEntries = 10 }))
	ts := openStream(t, in.Dial(), "mbe", 0)
	r := ts.sendFrame(smallBatch("mbe", 1, 11))
	if n := r.GetNack(); n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || n.ShouldRetry ||
		n.SequenceNumber != 1 || n.CorrelationId != "c-1" || !strings.Contains(n.ErrorMessage, "max-batch-entries") || !strings.Contains(n.ErrorMessage, "11 entries") {
		t.Fatalf("11-entry batch: got %v, want invalid_format naming max-batch-entries", r)
	}
	if a := ts.sendFrame(smallBatch("mbe", 1, 10)).GetAck(); a == nil {
		t.Fatal("10-entry batch not acked after the refusal")
	}
}

// TestLimitsValidated: out-of-range limits fail New with the field's name.
func TestLimitsValidated(t *testing.T) {
	for name, l := range map[string]server.Limits{
		"SourceRateEntries": {SourceRateEntries: -1},
		"SourceRateBytes":   {SourceRateBytes: math.NaN()},
		"MaxStreams":        {MaxStreams: -1},
		"MaxBatchEntries":   {MaxBatchEntries: -5},
	} {
		sk, err := jsonl.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer sk.Close()
		_, err = server.New(context.Background(), server.Config{DataDir: t.TempDir(), Sink: sk, Limits: l})
		if err == nil || !strings.Contains(err.Error(), "Limits."+name) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}

// TestManualFlushesCoalesce: client flushes are spaced by
// MinManualFlushInterval; requests made meanwhile share one flush, which
// starts after they arrived (their batches are committed), and none fails.
func TestManualFlushesCoalesce(t *testing.T) {
	const interval = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Limits.MinManualFlushInterval = interval
		c.FlushInterval = time.Hour
		c.Metrics = reg
	}))
	ts := openStream(t, in.Dial(), "mf", 0)
	ctx := context.Background()
	if a := ts.sendFrame(smallBatch("mf", 1, 5)).GetAck(); a == nil {
		t.Fatal("not acked")
	}
	start := time.Now()
	if res, err := in.Server.FlushNow(ctx, 0); err != nil || !res.Success {
		t.Fatal(res, err)
	}
	if a := ts.sendFrame(smallBatch("mf", 2, 5)).GetAck(); a == nil {
		t.Fatal("not acked")
	}
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if res, err := in.Server.FlushNow(ctx, 0); err != nil || !res.Success {
				t.Errorf("coalesced flush: %v %v", res, err)
			}
		})
	}
	wg.Wait()
	if el := time.Since(start); el < interval {
		t.Errorf("second flush ended %v after the first began, before the %v interval", el, interval)
	}
	if got := flushCount(t, reg); got != 2 {
		t.Errorf("6 requests made %v flushes, want 2 (the first, then one shared)", got)
	}
	assertExactlyOnce(t, in, map[string]int{"mf": 10})
}

func flushCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "lakehouse_flushes_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// TestStreamCaps: streams beyond MaxStreams, or beyond MaxStreamsPerKey for
// one key, end with RESOURCE_EXHAUSTED; a slot freed is usable again.
func TestStreamCaps(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Limits.MaxStreams = 3
		c.Limits.MaxStreamsPerKey = 1
		c.Limits.StreamKey = func(ctx context.Context) string {
			md, _ := metadata.FromIncomingContext(ctx)
			return strings.Join(md.Get("x-test-principal"), "")
		}
	}))
	cc := in.Dial()
	keyed := func(k string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "x-test-principal", k)
	}
	// open starts a stream and reports the status its connect got.
	open := func(ctx context.Context, source string) (codes.Code, context.CancelFunc) {
		ctx, cancel := context.WithCancel(ctx)
		st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
		if err == nil {
			err = st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}})
			if errors.Is(err, io.EOF) {
				err = nil // the server already ended the stream: Recv returns its status
			}
		}
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil && status.Code(err) == codes.ResourceExhausted && !strings.Contains(status.Convert(err).Message(), "limit of") {
			t.Errorf("refusal does not name the limit: %v", err)
		}
		t.Cleanup(cancel)
		return status.Code(err), cancel
	}
	if c, _ := open(keyed("alice"), "a1"); c != codes.OK {
		t.Fatalf("first stream of alice: %v", c)
	}
	if c, _ := open(keyed("alice"), "a2"); c != codes.ResourceExhausted {
		t.Fatalf("second stream of alice (per-key cap 1): %v, want ResourceExhausted", c)
	}
	if c, _ := open(keyed("bob"), "b1"); c != codes.OK {
		t.Fatalf("bob's stream: %v", c)
	}
	c, cancelAnon := open(context.Background(), "anon1") // no key: only the total cap
	if c != codes.OK {
		t.Fatalf("unkeyed stream: %v", c)
	}
	if c, _ := open(context.Background(), "anon2"); c != codes.ResourceExhausted {
		t.Fatalf("fourth stream (total cap 3): %v, want ResourceExhausted", c)
	}
	cancelAnon()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _ := open(context.Background(), "anon3")
		if c == codes.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot of a closed stream never freed: %v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
