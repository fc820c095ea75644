package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/bench"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// resumingSource streams numbered W1 batches for one source and survives
// server crashes: it keeps every unacked batch, reconnects, reads
// connected.last_sequence and resends exactly what the server lacks. It
// records which entries were acked.
type resumingSource struct {
	id        string
	addr      string
	batchSize int
	window    int // batches in flight

	mu      sync.Mutex
	acked   map[uint64]bool // entry sequences acked ok/buffered/fallback/duplicate
	nextSeq uint64          // next batch number to create
	pending map[uint64][]byte
	nacks   map[lakehousev1.NackReason]int // nacks received, by reason
	noDelay int                            // retryable nacks without a retry delay
	dopts   []grpc.DialOption              // TLS and token, when the server wants them

	// pool, when set, makes the frames (pre-encoded W1, patched per batch:
	// a cheap generator for high rates); they are made again for a resend.
	pool *bench.FramePool
	// pace, when set, is an open loop: batch seq is first sent at
	// start+(seq-1)*pace, or as soon after as the window allows.
	pace  time.Duration
	start time.Time
	// maxLag is the most a first send came after its scheduled time.
	maxLag time.Duration
}

// nackError ends a session on a nack; run reconnects after its retry delay.
type nackError struct{ n *lakehousev1.Nack }

func (e nackError) Error() string { return fmt.Sprintf("nack %v", e.n) }

func newResumingSource(id, addr string, batchSize, window int) *resumingSource {
	return &resumingSource{id: id, addr: addr, batchSize: batchSize, window: window,
		acked: make(map[uint64]bool), nextSeq: 1, pending: make(map[uint64][]byte),
		nacks: make(map[lakehousev1.NackReason]int)}
}

func (s *resumingSource) frame(seq uint64) []byte {
	if s.pool != nil {
		s.pending[seq] = nil
		return s.pool.Frame(int64(seq-1), seq, 0)
	}
	if f, ok := s.pending[seq]; ok {
		return f
	}
	b := &codec.Batch{
		Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, SourceID: []byte(s.id),
		Entries: workload.Entries(int64(seq-1)*int64(s.batchSize), int64(s.batchSize)),
	}
	f, err := codec.EncodeBatch(b)
	if err != nil {
		panic(err)
	}
	s.pending[seq] = f
	return f
}

// run streams until ctx ends or maxBatches are acked, reconnecting on any error.
func (s *resumingSource) run(ctx context.Context, maxBatches uint64) error {
	cc, err := grpc.NewClient(s.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, s.dopts...)...)
	if err != nil {
		return err
	}
	defer cc.Close()
	for ctx.Err() == nil {
		done, err := s.session(ctx, lakehousev1.NewCDCServiceClient(cc), maxBatches)
		if done {
			return nil
		}
		// The server was killed, or refused a batch: reconnect (after the
		// retry delay the nack asked for).
		wait := 30 * time.Millisecond
		if ne, ok := err.(nackError); ok && ne.n.GetRetryDelayMs() > 0 {
			wait = time.Duration(ne.n.GetRetryDelayMs()) * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

func (s *resumingSource) session(ctx context.Context, c lakehousev1.CDCServiceClient, maxBatches uint64) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.Stream(ctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: s.id}}}); err != nil {
		return false, err
	}
	r, err := st.Recv()
	if err != nil {
		return false, err
	}
	if r.GetConnected() == nil {
		// A Redirect (multi-instance mode): this source retries where it is
		// pointed at (the tests choose the instance).
		return false, fmt.Errorf("%s: connect answered %T", s.id, r.GetKind())
	}
	last := r.GetConnected().GetLastSequence()
	s.mu.Lock()
	// Everything up to last is durable on the server: it was acked, or its
	// ack was lost in the crash.
	for seq := range s.pending {
		if seq <= last {
			s.markAcked(seq)
		}
	}
	if last >= s.nextSeq {
		return false, fmt.Errorf("%s: server has %d, client only made %d", s.id, last, s.nextSeq-1)
	}
	next := last + 1
	s.mu.Unlock()

	sem := make(chan struct{}, s.window)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if a := r.GetAck(); a != nil {
				s.mu.Lock()
				s.markAcked(a.SequenceNumber)
				s.mu.Unlock()
				<-sem
			} else if n := r.GetNack(); n != nil {
				s.mu.Lock()
				s.nacks[n.Reason]++
				if n.ShouldRetry && n.RetryDelayMs == 0 && n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE {
					s.noDelay++
				}
				s.mu.Unlock()
				recvErr <- nackError{n}
				return
			}
		}
	}()
	for seq := next; ; seq++ {
		if seq > maxBatches {
			// Wait for the last acks.
			for i := 0; i < s.window; i++ {
				select {
				case sem <- struct{}{}:
				case err := <-recvErr:
					return false, err
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			return true, nil
		}
		var due time.Time
		if s.pace > 0 && seq >= s.nextSeq {
			due = s.start.Add(time.Duration(seq-1) * s.pace)
			select {
			case <-time.After(time.Until(due)):
			case err := <-recvErr:
				return false, err
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		select {
		case sem <- struct{}{}:
		case err := <-recvErr:
			return false, err
		case <-ctx.Done():
			return false, ctx.Err()
		}
		s.mu.Lock()
		if !due.IsZero() {
			s.maxLag = max(s.maxLag, time.Since(due))
		}
		if seq >= s.nextSeq {
			s.nextSeq = seq + 1
		}
		f := s.frame(seq)
		s.mu.Unlock()
		if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}); err != nil {
			return false, err
		}
	}
}

func (s *resumingSource) markAcked(seq uint64) {
	if _, ok := s.pending[seq]; !ok {
		return
	}
	first := (seq - 1) * uint64(s.batchSize)
	for i := uint64(1); i <= uint64(s.batchSize); i++ {
		s.acked[first+i] = true
	}
	delete(s.pending, seq)
}

// TestCrashSafety kills the server with SIGKILL at random points while
// several sources stream, restarts it, lets the sources resume from
// connected, and checks that the sink holds every acked entry exactly once:
// with the JSON-lines sink (many kills, fast) and with the Iceberg sink.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	tests := []struct {
		sink       string
		batches    uint64
		kills      int
		flushEvery string
		secure     bool // TLS and tokens on
	}{
		{sink: "jsonl", batches: 1000, kills: 5, flushEvery: "150ms"},
		{sink: "iceberg", batches: 300, kills: 3, flushEvery: "300ms"},
		{sink: "jsonl", batches: 300, kills: 3, flushEvery: "150ms", secure: true},
	}
	for _, tc := range tests {
		name := tc.sink
		if tc.secure {
			name += "-tls-tokens"
		}
		t.Run(name, func(t *testing.T) {
			var sec *secureServer
			if tc.secure {
				sec = newSecureServer(t, "crash-src-*")
			}
			crashSafety(t, tc.sink, tc.batches, tc.kills, tc.flushEvery, sec)
		})
	}
}

// crashSafety runs the crash test; sec, when set, turns TLS and tokens on
// for the server and its sources.
func crashSafety(t *testing.T, sinkKind string, maxBatches uint64, kills int, flushEvery string, sec *secureServer) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const (
		sources   = 4
		batchSize = 50
	)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "server.log")
	args := []string{"serve", "--data-dir", dataDir, "--grpc-addr", addr, "--http-addr", "",
		"--sink", sinkKind, "--flush-interval", flushEvery, "--flush-entries", "3000", "--log-level", "warn"}
	var dopts []grpc.DialOption
	if sec != nil {
		args = append(args, sec.args...)
		dopts = sec.dopts
	}
	p := startProcDial(t, dopts, nil, addr, logPath, args...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcs, wait := streamSources(ctx, "crash-src", addr, sources, batchSize, maxBatches, dopts...)
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(150+rng.IntN(600)) * time.Millisecond)
		p.kill()
		t.Logf("kill %d: acked so far %d entries", k+1, ackedCount(srcs))
		p = startProcDial(t, dopts, nil, addr, logPath, args...)
	}
	wait()
	if ctx.Err() != nil {
		t.Fatalf("sources did not finish: %v\n%s", ctx.Err(), readLog(t, logPath))
	}
	if err := p.stop(60 * time.Second); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, logPath))
	}
	checkExactlyOnce(t, srcs, readSink(t, sinkKind, dataDir), int(maxBatches)*batchSize)
	if sinkKind == "iceberg" {
		checkReadBackCommands(t, dataDir)
	}
	if t.Failed() {
		t.Logf("server log:\n%s", readLog(t, logPath))
	}
}

// checkReadBackCommands runs `lakehouse tables` and `lakehouse scan` on the
// data directory, as a user would after the server stopped.
func checkReadBackCommands(t *testing.T, dataDir string) {
	t.Helper()
	out, err := exec.Command(lakehouseBin(t), "tables", "--data-dir", dataDir, "--json").Output()
	if err != nil {
		t.Fatalf("lakehouse tables: %v", err)
	}
	var tables []struct {
		Name         string `json:"name"`
		OriginalName string `json:"original_name"`
		Rows         int64  `json:"rows"`
	}
	if err := json.Unmarshal(out, &tables); err != nil {
		t.Fatalf("lakehouse tables --json: %v\n%s", err, out)
	}
	if len(tables) != 8 || tables[0].Rows == 0 {
		t.Errorf("lakehouse tables: %s", out)
	}
	out, err = exec.Command(lakehouseBin(t), "scan", "--data-dir", dataDir, "--table", "users", "--limit", "3", "--json").Output()
	if err != nil {
		t.Fatalf("lakehouse scan: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var row struct {
		Op    string `json:"op"`
		After string `json:"after"`
	}
	if len(lines) != 3 || json.Unmarshal([]byte(lines[0]), &row) != nil || row.Op == "" {
		t.Errorf("lakehouse scan --table users --limit 3 --json:\n%s", out)
	}
}

type storedEntry struct {
	source string
	entry  uint64
}

// readSink returns (source, entry sequence) of every stored row.
func readSink(t *testing.T, kind, dataDir string) []storedEntry {
	t.Helper()
	var out []storedEntry
	switch kind {
	case "jsonl":
		recs, err := jsonl.ReadAll(filepath.Join(dataDir, "jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, storedEntry{r.SourceID, r.EntrySeq})
		}
	case "iceberg":
		out = readIceberg(t, dataDir, "")
	}
	return out
}

func ackedCount(srcs []*resumingSource) int {
	n := 0
	for _, s := range srcs {
		s.mu.Lock()
		n += len(s.acked)
		s.mu.Unlock()
	}
	return n
}

// streamSources starts n resuming sources, named prefix-0, prefix-1..., each
// streaming maxBatches batches of batchSize W1 entries to addr until done or
// ctx ends; wait blocks until every one has returned.
func streamSources(ctx context.Context, prefix, addr string, n, batchSize int, maxBatches uint64, dopts ...grpc.DialOption) (srcs []*resumingSource, wait func()) {
	return streamSourcesPaced(ctx, prefix, addr, n, batchSize, maxBatches, 0, dopts...)
}

// streamSourcesPaced is streamSources with each source sending a batch
// every pace at most (open loop; 0 sends as fast as acks allow), so that a
// test's ingest lasts as long on a fast machine as under the race detector.
func streamSourcesPaced(ctx context.Context, prefix, addr string, n, batchSize int, maxBatches uint64, pace time.Duration, dopts ...grpc.DialOption) (srcs []*resumingSource, wait func()) {
	srcs = make([]*resumingSource, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range srcs {
		srcs[i] = newResumingSource(fmt.Sprintf("%s-%d", prefix, i), addr, batchSize, 4)
		srcs[i].dopts = dopts
		srcs[i].pace, srcs[i].start = pace, start.Add(pace*time.Duration(i)/time.Duration(n))
		wg.Add(1)
		go func(s *resumingSource) {
			defer wg.Done()
			s.run(ctx, maxBatches)
		}(srcs[i])
	}
	return srcs, wg.Wait
}

// checkExactlyOnce checks that every source acked all its entries and that
// the stored rows are exactly those, each once.
func checkExactlyOnce(t *testing.T, srcs []*resumingSource, stored []storedEntry, wantPerSource int) {
	t.Helper()
	counts := make(map[string]map[uint64]int)
	for _, r := range stored {
		if counts[r.source] == nil {
			counts[r.source] = make(map[uint64]int)
		}
		counts[r.source][r.entry]++
	}
	for _, s := range srcs {
		if len(s.acked) != wantPerSource {
			t.Errorf("%s: %d entries acked, want %d", s.id, len(s.acked), wantPerSource)
		}
		for q := range s.acked {
			if c := counts[s.id][q]; c != 1 {
				t.Errorf("%s entry %d stored %d times", s.id, q, c)
			}
		}
		for q, c := range counts[s.id] {
			if c != 1 || !s.acked[q] {
				t.Errorf("%s entry %d stored %d times (acked: %v)", s.id, q, c, s.acked[q])
			}
		}
	}
}

// readIceberg returns (source, entry sequence) of every row in the Iceberg
// tables of the data directory's SQLite catalog.
func readIceberg(t *testing.T, dataDir, warehouse string) []storedEntry {
	t.Helper()
	return readIcebergConfig(t, iceberg.Config{DataDir: dataDir, Warehouse: warehouse})
}

// readIcebergConfig is readIceberg for any sink configuration (an s3://
// warehouse with its properties, for example).
func readIcebergConfig(t *testing.T, cfg iceberg.Config) []storedEntry {
	t.Helper()
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	tables, err := sk.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 8 {
		t.Errorf("%d Iceberg tables, want the 8 of W1", len(tables))
	}
	var out []storedEntry
	for _, tb := range tables {
		recs, err := sk.Scan(ctx, tb.Name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, storedEntry{r.SourceID, r.EntrySeq})
		}
	}
	return out
}
