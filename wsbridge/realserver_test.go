package wsbridge

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// startReal starts the real aggregator (servertest) and a bridge in front of
// it, connected over loopback gRPC as the standalone bridge is.
func startReal(t *testing.T) (*servertest.Instance, *testEnv) {
	t.Helper()
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Logger = slog.New(slog.DiscardHandler)
	}))
	return in, newEnv(t, in.Dial(), nil)
}

// flushReal flushes through the bridge's POST /flush-equivalent RPC.
func flushReal(t *testing.T, in *servertest.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := lakehousev1.NewCDCServiceClient(in.Dial()).Flush(ctx, &lakehousev1.FlushRequest{})
	if err != nil || !res.GetResult().GetSuccess() {
		t.Fatalf("flush: %v %v", res, err)
	}
}

type rowKey struct {
	source string
	seq    uint64
}

func recordsBySource(recs []jsonl.Record) map[rowKey][]jsonl.Record {
	m := make(map[rowKey][]jsonl.Record)
	for _, r := range recs {
		k := rowKey{r.SourceID, r.EntrySeq}
		m[k] = append(m[k], r)
	}
	return m
}

// TestRealServerVectors sends every cdc_batch vector through the bridge to
// the real server: each is acked with its ids and its rows land in the sink
// exactly as sent (falsy before/after absent).
func TestRealServerVectors(t *testing.T) {
	in, env := startReal(t)
	vs := loadVectors(t)
	for _, v := range vs {
		if v.Kind != "cdc_batch" {
			continue
		}
		c := env.dial(t, nil)
		connect(t, c, v.Decoded.SourceDoID, "vec-shard")
		send(t, c, websocket.MessageBinary, v.bytes)
		a, _ := recvAck(t, c)
		if a.Sequence != v.Decoded.SequenceNumber || string(a.CorrelationID) != v.Decoded.CorrelationID ||
			(a.Status != codec.AckOK && a.Status != codec.AckBuffered) {
			t.Fatalf("%s: ack %+v", v.Name, a)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	flushReal(t, in)
	rows := recordsBySource(in.Records())
	total := 0
	for _, v := range vs {
		if v.Kind != "cdc_batch" {
			continue
		}
		b, err := codec.DecodeBatch(v.bytes, codec.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Entries {
			total++
			got := rows[rowKey{v.Decoded.SourceDoID, e.Sequence}]
			if len(got) != 1 {
				t.Fatalf("%s entry %d: %d rows, want 1", v.Name, e.Sequence, len(got))
			}
			r := got[0]
			if r.Table != string(e.Table) || r.RowID != string(e.RowID) || r.Op != e.Op.String() ||
				r.EventTime != int64(e.Timestamp) || r.ShardName != "vec-shard" {
				t.Fatalf("%s entry %d: row %+v", v.Name, e.Sequence, r)
			}
			if !optEqual(r.Before, e.Before) || !optEqual(r.After, e.After) {
				t.Fatalf("%s entry %d: before/after %v %v, want %q %q", v.Name, e.Sequence, deref(r.Before), deref(r.After), e.Before, e.After)
			}
		}
	}
	if n := len(in.Records()); n != total {
		t.Fatalf("%d rows in the sink, want %d", n, total)
	}
}

func optEqual(got *string, want []byte) bool {
	if want == nil {
		return got == nil
	}
	return got != nil && *got == string(want)
}

func deref(s *string) string {
	if s == nil {
		return "<absent>"
	}
	return *s
}

// TestRealServerLegacyChildren runs legacy-child simulators through the
// bridge against the real server. Acks are lost on purpose, so children time
// out and resend the same entries under new batch numbers with IS_RETRY; the
// server recognises them by (source, entry sequence) and every entry is
// stored exactly once.
func TestRealServerLegacyChildren(t *testing.T) {
	in, env := startReal(t)
	const children, batches, per = 3, 10, 40
	var kids []*legacyChild
	for i := range children {
		kids = append(kids, startLegacyChild(t, env.wsURL, &legacyChild{
			Source: fmt.Sprintf("legacy-%d", i), Shard: fmt.Sprintf("shard-%d", i),
			AckTimeout: 400 * time.Millisecond, Heartbeat: 100 * time.Millisecond,
			LoseAck: func(seq uint64) bool { return seq == 2 || seq == 7 },
		}))
	}
	for range batches {
		for _, k := range kids {
			k.SendEntries(per)
		}
	}
	for _, k := range kids {
		st := waitIdle(t, k, 30*time.Second)
		if st.Failed != 0 || st.TimedOut < 2 || st.Resent < 2 || st.Duplicates < 2 {
			t.Fatalf("%s: stats %+v", k.Source, st)
		}
	}
	flushReal(t, in)
	rows := recordsBySource(in.Records())
	for _, k := range kids {
		var seqs []uint64
		for key, rs := range rows {
			if key.source != k.Source {
				continue
			}
			if len(rs) != 1 {
				t.Fatalf("%s entry %d stored %d times", k.Source, key.seq, len(rs))
			}
			if rs[0].ShardName != k.Shard {
				t.Fatalf("%s: shard %q", k.Source, rs[0].ShardName)
			}
			seqs = append(seqs, key.seq)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		if len(seqs) != batches*per || seqs[0] != 1 || seqs[len(seqs)-1] != batches*per {
			t.Fatalf("%s: %d distinct entries stored, want %d", k.Source, len(seqs), batches*per)
		}
	}
}

// TestRealServerHTTPAndJSON exercises /status, /flush and flush_request
// against the real server.
func TestRealServerHTTPAndJSON(t *testing.T) {
	in, env := startReal(t)
	_ = in
	c := env.dial(t, nil)
	st := connect(t, c, "rs-http", "")
	if st.ConnectedChildren != 1 {
		t.Fatalf("status %+v", st)
	}
	send(t, c, websocket.MessageBinary, encode(t, testBatch("rs-http", "k1", 1, 1, 3)))
	recvAck(t, c)
	sendJSON(t, c, codec.FlushRequestMessage{Type: codec.JSONFlushRequest, Timestamp: 1, SourceDoID: "rs-http", Reason: "manual"})
	recvText(t, c) // status after the flush
	eventually(t, 10*time.Second, "rows committed", func() bool { return len(in.Records()) == 3 })
}

// TestRealServerLargeBatch forwards a batch of about 12 MiB to the real server.
func TestRealServerLargeBatch(t *testing.T) {
	in, env := startReal(t)
	c := env.dial(t, nil)
	connect(t, c, "big", "")
	send(t, c, websocket.MessageBinary, encode(t, largeBatch("big", 12<<20)))
	_, p := recv(t, c)
	if n, err := codec.DecodeNack(p); err == nil && strings.Contains(n.Message, "ResourceExhausted") {
		// servertest's grpc.Server keeps the default 4 MiB receive limit;
		// lakehouse serve sets MaxRecvMsgSize. Runs once servertest does too.
		t.Skipf("servertest gRPC server refuses >4 MiB messages: %s", n.Message)
	}
	if a, err := codec.DecodeAck(p); err != nil || string(a.CorrelationID) != "big-1" {
		t.Fatalf("ack %x: %v", p[:min(len(p), 200)], err)
	}
	flushReal(t, in)
}
