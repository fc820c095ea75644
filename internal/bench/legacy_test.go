package bench

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/wsbridge"
)

// TestRunLegacyThroughBridge blasts two legacy WebSockets through the real
// bridge into a real server: every entry is acknowledged, counted once in
// the summary (a short last frame included), and lands in the sink exactly
// once.
func TestRunLegacyThroughBridge(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(quiet))
	b := wsbridge.New(wsbridge.Config{Upstream: in.Dial(), Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(b.Handler())
	defer srv.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := RunLegacy(ctx, LegacyConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/", Conns: 2, Entries: 5500, Pending: 3, Grace: 20 * time.Second,
	})
	if err != nil {
		t.Fatalf("RunLegacy: %v (%v)", err, sum)
	}
	if sum.Entries != 11000 || sum.Batches != 12 || sum.EntriesPerS <= 0 {
		t.Errorf("summary %+v", sum)
	}
	if _, err := lakehousev1.NewCDCServiceClient(in.Dial()).Flush(ctx, &lakehousev1.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]map[uint64]int)
	for _, r := range in.Records() {
		if seen[r.SourceID] == nil {
			seen[r.SourceID] = make(map[uint64]int)
		}
		seen[r.SourceID][r.EntrySeq]++
	}
	if len(seen) != 2 {
		t.Fatalf("%d sources in the sink", len(seen))
	}
	for src, seqs := range seen {
		if len(seqs) != 5500 {
			t.Errorf("%s: %d distinct entries, want 5500", src, len(seqs))
		}
		for seq, n := range seqs {
			if n != 1 || seq < 1 || seq > 5500 {
				t.Errorf("%s: entry %d landed %d times", src, seq, n)
				break
			}
		}
	}
	if !strings.Contains(sum.String(), "11000 entries acked in 12 batches") {
		t.Errorf("summary line %q", sum.String())
	}
}

// TestRunLegacyResendsNacked: a frame nacked with shouldRetry is sent again
// as a legacy child would, under a new batch number with IS_RETRY, and is
// counted once when acked.
func TestRunLegacyResendsNacked(t *testing.T) {
	var resend *codec.Batch
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(1 << 24)
		nacked := false
		for {
			typ, p, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if typ != websocket.MessageBinary {
				continue // connect
			}
			b, err := codec.DecodeBatch(p, codec.DecodeOptions{})
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			var out []byte
			if string(b.CorrelationID) == "1" && !nacked {
				nacked = true
				out, _ = codec.AppendNack(nil, &codec.Nack{Sequence: b.Sequence, Reason: codec.NackBufferFull, ShouldRetry: true,
					RetryDelayMs: 5, CorrelationID: b.CorrelationID})
			} else {
				if string(b.CorrelationID) == "1" {
					resend = b
				}
				out, _ = codec.AppendAck(nil, &codec.Ack{Sequence: b.Sequence, Status: codec.AckOK, CorrelationID: b.CorrelationID})
			}
			if err := ws.Write(r.Context(), websocket.MessageBinary, out); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	sum, err := RunLegacy(context.Background(), LegacyConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/", Conns: 1, Entries: 3000, Grace: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Entries != 3000 || sum.Batches != 3 || sum.Nacks != 1 || sum.Resent != 1 {
		t.Errorf("summary %+v", sum)
	}
	if resend == nil || !resend.Retry || resend.Sequence != 4 {
		t.Errorf("resent frame %+v, want IS_RETRY under batch number 4", resend)
	}
}
