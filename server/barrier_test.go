package server_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestStreamFlushIsABarrier sends a batch and a flush back to back, without
// waiting for the ack, as grpcurl does with its input: the flush must cover
// the batch, and its status come after the batch's ack and its persisted
// watermark. Appends are fsync'd, so a flush that did not wait for the
// batch would run before the batch reaches the buffer.
func TestStreamFlushIsABarrier(t *testing.T) {
	in := servertest.Start(t, servertest.WithSync())
	cc := in.Dial()
	for round := range 5 {
		src := fmt.Sprintf("barrier-%d", round)
		ts := openStream(t, cc, src, 0)
		for _, req := range []*lakehousev1.StreamRequest{
			{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: mustEncode(t, smallBatch(src, 1, 3))}},
			{Kind: &lakehousev1.StreamRequest_Flush{Flush: &lakehousev1.FlushRequest{}}},
		} {
			if err := ts.st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		var acked, persisted bool
		for {
			r, err := ts.st.Recv()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			switch {
			case r.GetAck() != nil:
				if r.GetAck().GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
					t.Fatalf("round %d: ack %v", round, r.GetAck())
				}
				acked = true
			case r.GetPersisted() != nil:
				persisted = persisted || r.GetPersisted().GetSequenceNumber() == 1
			case r.GetStatus() != nil:
				lf := r.GetStatus().GetLastFlush()
				if !acked || !persisted || !lf.GetSuccess() || lf.GetEntriesFlushed() < 3 {
					t.Fatalf("round %d: flush status after ack=%v persisted=%v, flush %v: the flush overtook the batch",
						round, acked, persisted, lf)
				}
			default:
				t.Fatalf("round %d: unexpected %v", round, r)
			}
			if r.GetStatus() != nil {
				break
			}
		}
	}
}

// TestStreamFlushBarrierOneWrite writes connect, a batch and a flush as one
// HTTP/2 request body, sent at once and half-closed, as grpcurl does with
// its input: the flush's status must still follow the batch's ack and
// persisted watermark, and cover the batch.
func TestStreamFlushBarrierOneWrite(t *testing.T) {
	in := servertest.Start(t, servertest.WithSync())
	var body bytes.Buffer
	for _, req := range []*lakehousev1.StreamRequest{
		{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "one-write"}}},
		{Kind: &lakehousev1.StreamRequest_Batch{Batch: &lakehousev1.Batch{SequenceNumber: 1, Entries: []*lakehousev1.Entry{
			{Sequence: 1, TimestampMs: 1764547200001, Operation: lakehousev1.Operation_OPERATION_INSERT, Table: "users", RowId: "u1", After: `{"id":"u1"}`},
			{Sequence: 2, TimestampMs: 1764547200002, Operation: lakehousev1.Operation_OPERATION_DELETE, Table: "users", RowId: "u1", Before: `{"id":"u1"}`},
		}}}},
		{Kind: &lakehousev1.StreamRequest_Flush{Flush: &lakehousev1.FlushRequest{}}},
	} {
		msg, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var prefix [5]byte // gRPC message framing: not compressed, u32 length
		binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
		body.Write(prefix[:])
		body.Write(msg)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+in.Addr+"/lakehouse.v1.CDCService/Stream", &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var kinds []string
	for {
		var prefix [5]byte
		if _, err := io.ReadFull(resp.Body, prefix[:]); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("read: %v (so far %v)", err, kinds)
		}
		msg := make([]byte, binary.BigEndian.Uint32(prefix[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			t.Fatal(err)
		}
		var r lakehousev1.StreamResponse
		if err := proto.Unmarshal(msg, &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.GetConnected() != nil:
			kinds = append(kinds, "connected")
		case r.GetAck() != nil:
			kinds = append(kinds, "ack:"+r.GetAck().GetStatus().String())
		case r.GetPersisted() != nil:
			kinds = append(kinds, fmt.Sprintf("persisted:%d", r.GetPersisted().GetSequenceNumber()))
		case r.GetStatus() != nil:
			kinds = append(kinds, fmt.Sprintf("status:%d", r.GetStatus().GetLastFlush().GetEntriesFlushed()))
		default:
			kinds = append(kinds, fmt.Sprint(&r))
		}
	}
	if st := resp.Trailer.Get("Grpc-Status"); st != "0" {
		t.Fatalf("stream ended with grpc-status %q (%s); responses %v", st, resp.Trailer.Get("Grpc-Message"), kinds)
	}
	if got, want := strings.Join(kinds, " "), "connected ack:ACK_STATUS_OK persisted:1 status:2"; got != want {
		t.Fatalf("responses %q, want %q", got, want)
	}
}
