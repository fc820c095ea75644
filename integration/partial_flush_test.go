package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// TestKillBetweenTableCommits makes the server process exit in the middle of
// a flush, before its 4th table commit of the 8 W1 tables, restarts it, and
// checks that the replayed flush completes the other tables without writing
// the committed ones twice, and that resent batches are duplicates. With
// --commit-parallelism 1 exactly 3 tables are committed at the exit; with
// 4, tables commit side by side and the exit cuts some in flight.
func TestKillBetweenTableCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	for _, par := range []int{1, 4} {
		t.Run(fmt.Sprintf("parallelism %d", par), func(t *testing.T) { killBetweenTableCommits(t, par) })
	}
}

func killBetweenTableCommits(t *testing.T, parallelism int) {
	const (
		source    = "partial-src"
		batches   = 5
		batchSize = 100
	)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", "",
		"--flush-interval", "1h", "--flush-age", "1h", "--log-level", "info", "--commit-parallelism", strconv.Itoa(parallelism)}
	p := startProcEnv(t, []string{"LAKEHOUSE_TEST_EXIT_BEFORE_TABLE_COMMIT=4"}, addr, logPath, args...)

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := lakehousev1.NewCDCServiceClient(cc)
	frame := func(seq uint64) []byte {
		f, err := codec.EncodeBatch(&codec.Batch{Sequence: seq, SourceID: []byte(source),
			Entries: workload.Entries(int64(seq-1)*batchSize, batchSize)})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	// send streams the batches and returns the acks' statuses.
	send := func(seqs ...uint64) (*lakehousev1.Connected, []lakehousev1.AckStatus) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := c.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}})
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var out []lakehousev1.AckStatus
		for _, seq := range seqs {
			st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame(seq)}})
			for {
				resp, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if a := resp.GetAck(); a != nil {
					out = append(out, a.Status)
					break
				}
				if n := resp.GetNack(); n != nil {
					t.Fatalf("batch %d nacked: %v", seq, n)
				}
			}
		}
		st.CloseSend()
		return r.GetConnected(), out
	}
	seqs := make([]uint64, batches)
	for i := range seqs {
		seqs[i] = uint64(i + 1)
	}
	send(seqs...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Flush(ctx, &lakehousev1.FlushRequest{}); err == nil {
		t.Fatal("flush succeeded; the fault injection should have stopped the server mid-flush")
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not exit\n%s", readLog(t, logPath))
	}

	// Serially three tables hold the flush, five do not; side by side,
	// fewer than all.
	committed := tableRows(t, dataDir)
	full := 0
	for _, n := range committed {
		if n > 0 {
			full++
		}
	}
	if parallelism == 1 && full != 3 || full >= 8 {
		t.Fatalf("after the crash %d tables hold rows (%v), want 3 (parallelism 1) or fewer than 8\n%s", full, committed, readLog(t, logPath))
	}
	t.Logf("after the crash %d of 8 tables hold rows", full)

	p = startProc(t, addr, logPath, args...)
	conn, statuses := send(4, 5, 6)
	if conn.GetLastSequence() != batches {
		t.Errorf("connected.last_sequence = %d, want %d", conn.GetLastSequence(), batches)
	}
	want := []lakehousev1.AckStatus{lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, lakehousev1.AckStatus_ACK_STATUS_DUPLICATE, lakehousev1.AckStatus_ACK_STATUS_OK}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Errorf("resend after restart: %v, want %v", statuses, want)
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	counts := map[uint64]int{}
	for _, e := range readSink(t, "iceberg", dataDir) {
		if e.source == source {
			counts[e.entry]++
		}
	}
	for q := uint64(1); q <= (batches+1)*batchSize; q++ {
		if counts[q] != 1 {
			t.Errorf("entry %d stored %d times", q, counts[q])
		}
	}
	if len(counts) != (batches+1)*batchSize {
		t.Errorf("%d distinct entries stored, want %d", len(counts), (batches+1)*batchSize)
	}
}

// tableRows returns the row count of each Iceberg table in dataDir.
func tableRows(t *testing.T, dataDir string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	infos, err := sk.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64)
	for _, in := range infos {
		out[in.Name] = in.Rows
	}
	return out
}
