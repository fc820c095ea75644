package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// testStream is a raw CDC stream for tests.
type testStream struct {
	t      *testing.T
	st     grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]
	cancel context.CancelFunc
	conn   *lakehousev1.Connected
}

func openStream(t *testing.T, cc grpc.ClientConnInterface, source string, mode lakehousev1.SequenceMode) *testStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	ts := &testStream{t: t, st: st, cancel: cancel}
	t.Cleanup(cancel)
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId: source, ShardName: "shard-" + source, SequenceMode: mode,
	}}}); err != nil {
		t.Fatalf("send connect: %v", err)
	}
	r := ts.recv()
	ts.conn = r.GetConnected()
	if ts.conn == nil {
		t.Fatalf("first response is %v, want connected", r)
	}
	return ts
}

// recv returns the next response that is not a persisted watermark.
func (ts *testStream) recv() *lakehousev1.StreamResponse {
	ts.t.Helper()
	for {
		r, err := ts.st.Recv()
		if err != nil {
			ts.t.Fatalf("recv: %v", err)
		}
		if r.GetPersisted() == nil {
			return r
		}
	}
}

func (ts *testStream) sendFrame(b *codec.Batch) *lakehousev1.StreamResponse {
	ts.t.Helper()
	frame, err := codec.EncodeBatch(b)
	if err != nil {
		ts.t.Fatalf("encode: %v", err)
	}
	return ts.sendRaw(frame)
}

func (ts *testStream) sendRaw(frame []byte) *lakehousev1.StreamResponse {
	ts.t.Helper()
	if err := ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
		ts.t.Fatalf("send: %v", err)
	}
	return ts.recv()
}

// smallBatch is batch seq of source with n W1 entries numbered from
// (seq-1)*n+1.
func smallBatch(source string, seq uint64, n int) *codec.Batch {
	return &codec.Batch{
		Timestamp:     uint64(time.Now().UnixMilli()),
		Sequence:      seq,
		SourceID:      []byte(source),
		CorrelationID: []byte(fmt.Sprintf("c-%d", seq)),
		Entries:       workload.Entries(int64(max(seq, 1)-1)*int64(n), int64(n)),
	}
}

func TestSequencing(t *testing.T) {
	in := servertest.Start(t)
	cc := in.Dial()
	type step struct {
		seq      uint64
		status   lakehousev1.AckStatus
		reason   lakehousev1.NackReason
		expected uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 2, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 3, status: lakehousev1.AckStatus_ACK_STATUS_OK}}},
		{"resend is duplicate", []step{{seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_DUPLICATE}, {seq: 2, status: lakehousev1.AckStatus_ACK_STATUS_OK}}},
		{"older is duplicate", []step{{seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 2, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_DUPLICATE}}},
		{"gap", []step{{seq: 1, status: lakehousev1.AckStatus_ACK_STATUS_OK}, {seq: 3, reason: lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, expected: 2}, {seq: 2, status: lakehousev1.AckStatus_ACK_STATUS_OK}}},
		{"first must be 1", []step{{seq: 2, reason: lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, expected: 1}}},
		{"zero is invalid", []step{{seq: 0, reason: lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE, expected: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "seq-" + tc.name
			ts := openStream(t, cc, src, lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH)
			for i, st := range tc.steps {
				r := ts.sendFrame(smallBatch(src, st.seq, 3))
				if st.reason != 0 {
					n := r.GetNack()
					if n == nil || n.Reason != st.reason || n.ExpectedSequence != st.expected || n.SequenceNumber != st.seq {
						t.Fatalf("step %d: got %v, want nack %v expecting %d", i, r, st.reason, st.expected)
					}
					continue
				}
				a := r.GetAck()
				if a == nil || a.Status != st.status || a.SequenceNumber != st.seq || a.CorrelationId != fmt.Sprintf("c-%d", st.seq) {
					t.Fatalf("step %d: got %v, want ack %v for %d", i, r, st.status, st.seq)
				}
			}
		})
	}
}

func TestTakeoverFencesOldStream(t *testing.T) {
	in := servertest.Start(t)
	cc := in.Dial()
	old := openStream(t, cc, "fence", 0)
	if a := old.sendFrame(smallBatch("fence", 1, 2)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatal("first batch not acked")
	}
	nu := openStream(t, cc, "fence", 0)
	if nu.conn.LastSequence != 1 {
		t.Fatalf("connected.last_sequence = %d, want 1", nu.conn.LastSequence)
	}
	// The old stream is closed with Aborted; whatever it sends is not stored.
	_ = old.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: mustEncode(t, smallBatch("fence", 2, 2))}})
	for {
		_, err := old.st.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Aborted {
			t.Fatalf("old stream ended with %v, want Aborted", err)
		}
		break
	}
	if a := nu.sendFrame(smallBatch("fence", 2, 2)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("new stream's batch 2 not acked ok")
	}
}

func mustEncode(t *testing.T, b *codec.Batch) []byte {
	t.Helper()
	f, err := codec.EncodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFirstMessageMustBeConnect(t *testing.T) {
	in := servertest.Start(t)
	st, err := lakehousev1.NewCDCServiceClient(in.Dial()).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{Heartbeat: &lakehousev1.Heartbeat{}}})
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

func TestInvalidFormatKeepsStream(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "bad", 0)
	good := mustEncode(t, smallBatch("bad", 1, 2))
	badJSON := smallBatch("bad", 1, 1)
	badJSON.Entries[0].After = []byte("{not json")
	cases := []struct {
		name  string
		frame []byte
		corr  string
	}{
		{"garbage", []byte("hello"), ""},
		{"truncated", good[:len(good)-3], "c-1"},
		{"bad magic", append([]byte{0xEF, 0xBE}, good[2:]...), ""},
		{"invalid json", mustEncode(t, badJSON), "c-1"},
		{"other source", mustEncode(t, smallBatch("someone-else", 1, 1)), "c-1"},
	}
	for _, c := range cases {
		n := ts.sendRaw(c.frame).GetNack()
		if n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || n.ShouldRetry || n.CorrelationId != c.corr {
			t.Errorf("%s: got %v, want invalid_format nack with correlation %q", c.name, n, c.corr)
		}
	}
	if a := ts.sendRaw(good).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatal("stream unusable after bad frames")
	}
}

func TestStructuredBatchHeartbeatAndFlush(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "structured", 0)
	req := &lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Batch{Batch: &lakehousev1.Batch{
		SequenceNumber: 1, CorrelationId: "x",
		Entries: []*lakehousev1.Entry{
			{Sequence: 1, TimestampMs: 1700000000000, Operation: lakehousev1.Operation_OPERATION_INSERT, Table: "users", RowId: "u1", After: `{"id":1}`},
			{Sequence: 2, TimestampMs: 1700000000001, Operation: lakehousev1.Operation_OPERATION_DELETE, Table: "users", RowId: "u1", Before: `{"id":1}`},
		},
	}}}
	if err := ts.st.Send(req); err != nil {
		t.Fatal(err)
	}
	if a := ts.recv().GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.CorrelationId != "x" {
		t.Fatalf("structured batch: got %v", a)
	}
	ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Heartbeat{Heartbeat: &lakehousev1.Heartbeat{TimestampMs: 42}}})
	if p := ts.recv().GetPong(); p == nil || p.TimestampMs != 42 || p.ServerTimeMs == 0 {
		t.Fatalf("heartbeat: got %v", p)
	}
	ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Flush{Flush: &lakehousev1.FlushRequest{}}})
	var sawPersisted, sawStatus bool
	for !sawPersisted || !sawStatus {
		r, err := ts.st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if p := r.GetPersisted(); p != nil && p.SequenceNumber == 1 && p.EntrySequence == 2 {
			sawPersisted = true
		}
		if s := r.GetStatus(); s != nil {
			if !s.GetLastFlush().GetSuccess() || s.GetLastFlush().GetEntriesFlushed() != 2 {
				t.Fatalf("flush status: %v", s.GetLastFlush())
			}
			sawStatus = true
		}
	}
	recs := in.Records()
	if len(recs) != 2 || recs[0].Op != "INSERT" || *recs[0].After != `{"id":1}` || recs[1].Before == nil || recs[1].After != nil {
		t.Fatalf("sink holds %+v", recs)
	}
}

func TestRestartReplaysAndResumes(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "replay", 0)
	for seq := uint64(1); seq <= 3; seq++ {
		if a := ts.sendFrame(smallBatch("replay", seq, 4)).GetAck(); a == nil {
			t.Fatalf("batch %d not acked", seq)
		}
	}
	in.Restart() // nothing flushed: all three batches only in the log
	ts = openStream(t, in.Dial(), "replay", 0)
	// The restarted server commits what it replayed on its own, and that
	// commit can finish before this connect: persisted is 0 or all of it.
	if p := ts.conn.PersistedSequence; ts.conn.LastSequence != 3 || (p != 0 && p != 3) {
		t.Fatalf("after restart connected = %v, want last 3, persisted 0 (not yet committed) or 3", ts.conn)
	}
	if a := ts.sendFrame(smallBatch("replay", 3, 4)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		t.Fatal("resent batch 3 not a duplicate")
	}
	if a := ts.sendFrame(smallBatch("replay", 4, 4)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatal("batch 4 not accepted")
	}
	// The restarted server flushes what it replayed on its own; this flush
	// commits the rest.
	res, err := in.Server.FlushNow(context.Background(), 0)
	if err != nil || !res.Success {
		t.Fatalf("flush: %v %v", res, err)
	}
	// Committed and released: a second restart finds the sequencing in the
	// saved state, not the log.
	in.Restart()
	ts = openStream(t, in.Dial(), "replay", 0)
	if ts.conn.LastSequence != 4 || ts.conn.PersistedSequence != 4 {
		t.Fatalf("after flush and restart connected = %v", ts.conn)
	}
	if st := in.Server.Status(); st.Wal.SizeBytes != 0 && st.Buffer.BatchCount != 0 {
		t.Fatalf("log not released: %v", st.Wal)
	}
	assertExactlyOnce(t, in, map[string]int{"replay": 16})
}

// assertExactlyOnce checks the sink holds entries 1..n of each source once.
func assertExactlyOnce(t *testing.T, in *servertest.Instance, want map[string]int) {
	t.Helper()
	seen := make(map[string]map[uint64]int)
	for _, r := range in.Records() {
		if seen[r.SourceID] == nil {
			seen[r.SourceID] = make(map[uint64]int)
		}
		seen[r.SourceID][r.EntrySeq]++
	}
	for src, n := range want {
		for q := uint64(1); q <= uint64(n); q++ {
			if c := seen[src][q]; c != 1 {
				t.Errorf("source %s entry %d stored %d times", src, q, c)
			}
		}
		if len(seen[src]) != n {
			t.Errorf("source %s: %d distinct entries stored, want %d", src, len(seen[src]), n)
		}
	}
}

func TestWALCapNacksBufferFull(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.WALMaxBytes = 6000
		c.WALSegmentBytes = 2000
		c.FlushInterval = time.Hour
		c.WALCommitThreshold = 1 // no early commit: the cap is reached
	}))
	ts := openStream(t, in.Dial(), "walcap", 0)
	var seq uint64 = 1
	for ; ; seq++ {
		if n := ts.sendFrame(smallBatch("walcap", seq, 3)).GetNack(); n != nil {
			if n.Reason != lakehousev1.NackReason_NACK_REASON_BUFFER_FULL {
				t.Fatalf("got %v, want buffer_full", n)
			}
			break
		}
		if seq > 50 {
			t.Fatal("log cap never reached")
		}
	}
	if _, err := in.Server.FlushNow(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if a := ts.sendFrame(smallBatch("walcap", seq, 3)).GetAck(); a == nil {
		t.Fatal("not accepted after the log was released")
	}
}

func TestEntryModeDedup(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "legacy", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	b := smallBatch("legacy", 7, 4) // entries 25..28; legacy batch numbers need not start at 1
	if a := ts.sendFrame(b).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.SequenceNumber != 7 {
		t.Fatalf("got %v", a)
	}
	// A resend under a new number, with one new entry.
	b2 := smallBatch("legacy", 7, 5)
	b2.Sequence, b2.Retry = 8, true
	b2.Entries = append(b.Entries, workload.Entry(28))
	a := ts.sendFrame(b2).GetAck()
	if a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.Details.EntriesAccepted != 1 || a.Details.EntriesDuplicate != 4 {
		t.Fatalf("partial resend: got %v", a)
	}
	b.Sequence = 9
	if a := ts.sendFrame(b).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		t.Fatalf("full resend: got %v", a)
	}
	in.Restart() // the window is rebuilt from the log
	ts = openStream(t, in.Dial(), "legacy", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	b.Sequence = 1
	if a := ts.sendFrame(b).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		t.Fatalf("resend after restart: got %v", a)
	}
	in.Server.FlushNow(context.Background(), 0)
	in.Restart() // and from the saved state once the log is released
	ts = openStream(t, in.Dial(), "legacy", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	if a := ts.sendFrame(b).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		t.Fatalf("resend after flush and restart: got %v", a)
	}
	seen := map[uint64]int{}
	for _, r := range in.Records() {
		seen[r.EntrySeq]++
	}
	if len(seen) != 5 || seen[25] != 1 || seen[29] != 1 {
		t.Fatalf("sink entries %v, want 25..29 once", seen)
	}
}

// flakySink fails commits while failing is set.
type flakySink struct {
	sink.Sink
	failing chan bool
	fail    bool
}

func (f *flakySink) Commit(ctx context.Context, fl *sink.Flush) (sink.Result, error) {
	select {
	case f.fail = <-f.failing:
	default:
	}
	if f.fail {
		return sink.Result{}, errors.New("injected storage failure")
	}
	return f.Sink.Commit(ctx, fl)
}

func TestStorageFailureFallbackAndRecovery(t *testing.T) {
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.RecoveryInitialDelay = 20 * time.Millisecond
		c.RecoveryMaxDelay = 50 * time.Millisecond
		c.FlushInterval = time.Hour
	}))
	fs := &flakySink{failing: make(chan bool, 1)}
	in.WrapSink(func(s sink.Sink) sink.Sink { fs.Sink = s; return fs })
	in.Restart()
	fs.failing <- true
	ts := openStream(t, in.Dial(), "flaky", 0)
	ts.sendFrame(smallBatch("flaky", 1, 3))
	res, err := in.Server.FlushNow(context.Background(), 0)
	if err != nil || res.Success || !res.UsedFallback {
		t.Fatalf("flush during failure: %v %v", res, err)
	}
	if a := ts.sendFrame(smallBatch("flaky", 2, 3)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_FALLBACK {
		t.Fatalf("ack during failure: %v", a)
	}
	st := in.Server.Status()
	if st.State != lakehousev1.ParentState_PARENT_STATE_RECOVERING || !st.Recovery.Active || st.Recovery.PendingBatches != 2 {
		t.Fatalf("status during failure: %v %v", st.State, st.Recovery)
	}
	// One failed flush is one recovery attempt (its delay doubles once).
	if st.Recovery.Attempt != 1 {
		t.Errorf("one failed flush counted as %d recovery attempts", st.Recovery.Attempt)
	}
	fs.failing <- false
	deadline := time.Now().Add(10 * time.Second)
	for in.Server.Status().Recovery.Active {
		if time.Now().After(deadline) {
			t.Fatal("recovery loop never committed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertExactlyOnce(t, in, map[string]int{"flaky": 6})
}

func TestHealthAndReflection(t *testing.T) {
	in := servertest.Start(t)
	cc := in.Dial()
	r, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{Service: server.ServiceName})
	if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", r, err)
	}
	st, err := lakehousev1.NewCDCServiceClient(cc).GetStatus(context.Background(), &lakehousev1.GetStatusRequest{})
	if err != nil || st.Status.State != lakehousev1.ParentState_PARENT_STATE_IDLE {
		t.Fatalf("status: %v %v", st, err)
	}
	// Reflection, as grpcurl uses it: list the services.
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !slices.Contains(names, server.ServiceName) {
		t.Errorf("reflection lists %v, want %s among them", names, server.ServiceName)
	}
	if err := rs.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownClosesStreams(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "drain", 0)
	ts.sendFrame(smallBatch("drain", 1, 2))
	done := make(chan error, 1)
	go func() {
		for {
			r, err := ts.st.Recv()
			if err != nil {
				done <- err
				return
			}
			if n := r.GetNack(); n != nil && n.Reason != lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN {
				done <- fmt.Errorf("unexpected nack %v", n)
				return
			}
		}
	}()
	in.Stop()
	if err := <-done; status.Code(err) != codes.Unavailable && !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
	assertExactlyOnce(t, in, map[string]int{"drain": 2})
}

func TestPipelinedBatchesAckedInOrder(t *testing.T) {
	in := servertest.Start(t, servertest.WithSync())
	ts := openStream(t, in.Dial(), "pipe", 0)
	const n = 40
	go func() {
		for seq := uint64(1); seq <= n; seq++ {
			ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: mustEncode(t, smallBatch("pipe", seq, 50))}})
		}
	}()
	for seq := uint64(1); seq <= n; seq++ {
		a := ts.recv().GetAck()
		if a == nil || a.SequenceNumber != seq || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
			t.Fatalf("reply %d: %v", seq, a)
		}
	}
	// The stream's next batches join the fsync its previous ones wait for.
	if w := in.Server.Status().Wal; w.Syncs >= w.Appends {
		t.Errorf("%d fsyncs for %d appends: no group commit within a stream", w.Syncs, w.Appends)
	}
	// A takeover sees every queued batch settled.
	nu := openStream(t, in.Dial(), "pipe", 0)
	if nu.conn.LastSequence != n {
		t.Fatalf("connected.last_sequence = %d, want %d", nu.conn.LastSequence, n)
	}
	in.Server.FlushNow(context.Background(), 0)
	assertExactlyOnce(t, in, map[string]int{"pipe": n * 50})
}

// TestEntryModeDedupInside: duplicates inside a batch, after new entries and
// among them, are dropped; the entries around them are stored once each.
func TestEntryModeDedupInside(t *testing.T) {
	in := servertest.Start(t)
	ts := openStream(t, in.Dial(), "legacy", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	if a := ts.sendFrame(smallBatch("legacy", 1, 2)).GetAck(); a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK {
		t.Fatalf("got %v", a)
	}
	b := smallBatch("legacy", 2, 1)
	// Entries 3 and 4 are new; 1 is in the window; 4 again repeats inside the batch.
	b.Entries = []codec.Entry{workload.Entry(2), workload.Entry(0), workload.Entry(3), workload.Entry(3)}
	a := ts.sendFrame(b).GetAck()
	if a == nil || a.Status != lakehousev1.AckStatus_ACK_STATUS_OK || a.Details.EntriesAccepted != 2 || a.Details.EntriesDuplicate != 2 {
		t.Fatalf("got %v", a)
	}
	in.Stop()
	var seqs []uint64
	for _, r := range in.Records() {
		seqs = append(seqs, r.EntrySeq)
	}
	slices.Sort(seqs)
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
		t.Fatalf("stored entry sequences %v", seqs)
	}
}
