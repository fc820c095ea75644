package wsbridge

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

const vectorsDir = "../../shared/spec/vectors"

// vector is one case of spec/vectors/manifest.json.
type vector struct {
	Name    string                `json:"name"`
	File    string                `json:"file"`
	Kind    string                `json:"kind"`
	Decoded codec.CDCBatchMessage `json:"decoded"`
	bytes   []byte
}

// loadVectors reads every vector; a missing directory fails the test.
func loadVectors(tb testing.TB) []vector {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(vectorsDir, "manifest.json"))
	if err != nil {
		tb.Fatalf("spec vectors missing (expected at %s): %v", vectorsDir, err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		tb.Fatalf("manifest.json: %v", err)
	}
	if len(vs) == 0 {
		tb.Fatal("manifest.json lists no vectors")
	}
	for i := range vs {
		vs[i].bytes, err = os.ReadFile(filepath.Join(vectorsDir, vs[i].File))
		if err != nil {
			tb.Fatalf("vector %s: %v", vs[i].Name, err)
		}
	}
	return vs
}

// TestVectorBatches sends every cdc_batch vector over a real WebSocket: each
// is forwarded untouched and acked with its sequence number and correlation
// id, in the spec's ack layout.
func TestVectorBatches(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	n := 0
	for _, v := range loadVectors(t) {
		if v.Kind != "cdc_batch" {
			continue
		}
		n++
		t.Run(v.Name, func(t *testing.T) {
			c := env.dial(t, nil)
			connect(t, c, v.Decoded.SourceDoID, "shard-a")
			if got := fake.lastConnect(); got.GetSourceId() != v.Decoded.SourceDoID || got.GetSequenceMode() != lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY || got.GetShardName() != "shard-a" {
				t.Fatalf("upstream connect = %v", got)
			}
			send(t, c, websocket.MessageBinary, v.bytes)
			a, raw := recvAck(t, c)
			if a.Sequence != v.Decoded.SequenceNumber || string(a.CorrelationID) != v.Decoded.CorrelationID || a.Status != codec.AckOK {
				t.Fatalf("ack seq=%d corr=%q status=%s, want seq=%d corr=%q ok", a.Sequence, a.CorrelationID, a.Status, v.Decoded.SequenceNumber, v.Decoded.CorrelationID)
			}
			wantLen := 25
			if v.Decoded.CorrelationID != "" {
				wantLen = 27 + len(v.Decoded.CorrelationID)
			}
			if len(raw) != wantLen {
				t.Fatalf("ack is %d bytes, want %d", len(raw), wantLen)
			}
			if got := fake.lastFrame(); !bytes.Equal(got, v.bytes) {
				t.Fatalf("upstream got a modified frame:\n got %x\nwant %x", got, v.bytes)
			}
			// A source's rows landed (falsy payloads arrive as absent).
			if seqs := fake.entrySeqs(v.Decoded.SourceDoID); len(seqs) < len(v.Decoded.Entries) {
				t.Fatalf("stored %d entries, want >= %d", len(seqs), len(v.Decoded.Entries))
			}
		})
	}
	if n == 0 {
		t.Fatal("no cdc_batch vectors")
	}
}

// TestVectorBatchesAsJSON sends each cdc_batch vector's legacy JSON form (a
// child without binary support): the upstream gets the same entries.
func TestVectorBatchesAsJSON(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	for _, v := range loadVectors(t) {
		if v.Kind != "cdc_batch" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			c := env.dial(t, nil)
			connect(t, c, v.Decoded.SourceDoID, "")
			sendJSON(t, c, v.Decoded)
			a, _ := recvAck(t, c)
			if a.Sequence != v.Decoded.SequenceNumber || string(a.CorrelationID) != v.Decoded.CorrelationID {
				t.Fatalf("ack seq=%d corr=%q", a.Sequence, a.CorrelationID)
			}
			want, err := codec.DecodeBatch(v.bytes, codec.DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := codec.DecodeBatch(fake.lastFrame(), codec.DecodeOptions{StrictChecksum: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Entries) != len(want.Entries) || got.Retry != want.Retry {
				t.Fatalf("entries %d retry %v, want %d %v", len(got.Entries), got.Retry, len(want.Entries), want.Retry)
			}
			for i := range want.Entries {
				g, w := got.Entries[i], want.Entries[i]
				if g.Sequence != w.Sequence || g.Op != w.Op || !bytes.Equal(g.Table, w.Table) || !bytes.Equal(g.RowID, w.RowID) ||
					!jsonEqual(g.Before, w.Before) || !jsonEqual(g.After, w.After) {
					t.Fatalf("entry %d differs:\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// TestVectorAcksAndNacks makes the upstream answer with each ack and nack
// vector's content and checks that the bridge writes the vector's bytes
// (timestamp aside).
func TestVectorAcksAndNacks(t *testing.T) {
	fake := newFakeServer()
	var next *lakehousev1.StreamResponse
	fake.respond = func(string, []byte, *codec.Batch) (*lakehousev1.StreamResponse, bool, error) {
		return next, true, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "vec-source", "")
	entrySeq := uint64(1)
	for _, v := range loadVectors(t) {
		if v.Kind != "ack" && v.Kind != "nack" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			var seq uint64
			var corr []byte
			if v.Kind == "ack" {
				a, err := codec.DecodeAck(v.bytes)
				if err != nil {
					t.Fatal(err)
				}
				seq, corr = a.Sequence, a.CorrelationID
				next = ackResp(a.Sequence, string(a.CorrelationID), protoAckStatus(a.Status))
			} else {
				n, err := codec.DecodeNack(v.bytes)
				if err != nil {
					t.Fatal(err)
				}
				seq, corr = n.Sequence, n.CorrelationID
				r := nackResp(n.Sequence, string(n.CorrelationID), protoNackReason(n.Reason), n.Message)
				r.GetNack().ShouldRetry, r.GetNack().RetryDelayMs = n.ShouldRetry, n.RetryDelayMs
				next = r
			}
			send(t, c, websocket.MessageBinary, encode(t, testBatch("vec-source", string(corr), seq, entrySeq, 1)))
			entrySeq++
			_, got := recv(t, c)
			want := bytes.Clone(v.bytes)
			copy(want[8:16], got[8:16]) // the timestamp is the bridge's clock
			if !bytes.Equal(got, want) {
				t.Fatalf("frame differs:\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestVectorParentFramesFromChild: ack and nack frames sent by a child are not
// batches: each gets a nack invalid_format and the connection stays up.
func TestVectorParentFramesFromChild(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "src", "")
	for _, v := range loadVectors(t) {
		if v.Kind == "cdc_batch" {
			continue
		}
		send(t, c, websocket.MessageBinary, v.bytes)
		n, _ := recvNack(t, c)
		h, _ := codec.ReadHeader(v.bytes)
		if n.Reason != codec.NackInvalidFormat || n.ShouldRetry || n.Sequence != h.Sequence {
			t.Fatalf("%s: nack %+v", v.Name, n)
		}
	}
	pingPong(t, c)
	if fake.frameCount() != 0 {
		t.Fatalf("%d frames forwarded, want 0", fake.frameCount())
	}
}

func protoAckStatus(s codec.AckStatus) lakehousev1.AckStatus {
	return [...]lakehousev1.AckStatus{
		lakehousev1.AckStatus_ACK_STATUS_OK, lakehousev1.AckStatus_ACK_STATUS_BUFFERED, lakehousev1.AckStatus_ACK_STATUS_PERSISTED,
		lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, lakehousev1.AckStatus_ACK_STATUS_FALLBACK,
	}[s]
}

func protoNackReason(r codec.NackReason) lakehousev1.NackReason {
	return [...]lakehousev1.NackReason{
		lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, lakehousev1.NackReason_NACK_REASON_RATE_LIMITED,
		lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT,
		lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR, lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN,
	}[r]
}
