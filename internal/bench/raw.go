package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/client"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// RawStream is the transport baseline: for duration, each of sources plain
// gRPC streams (one connection each) sends W1 binary_batch frames numbered
// 1, 2, 3... after Connected.last_sequence (pre-encoded, see FramePool), as fast as gRPC flow control
// allows, without waiting for acks, retrying or batching. After the duration
// it half-closes the streams and waits for the server's answers. Entries and
// Bytes count batches acknowledged OK/BUFFERED/FALLBACK; SentEntries counts
// what was sent. Nacks are counted but never acted on.
func RawStream(ctx context.Context, addr string, sources int, duration time.Duration) (*Summary, error) {
	return RawStreamConfig(ctx, Config{Addr: addr, Sources: sources, Duration: duration})
}

// RawStreamConfig is RawStream with a full Config (Entries, BatchSize,
// SourcePrefix and Progress are honoured; ClientOptions are ignored).
func RawStreamConfig(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.Workload != WorkloadW1 {
		return nil, fmt.Errorf("bench: the raw baseline sends workload %s only", WorkloadW1)
	}
	cfg.SourcePrefix += "-raw"
	rs := make([]*rawSource, cfg.Sources)
	for i := range rs {
		r, err := openRaw(ctx, cfg.Addr, fmt.Sprintf("%s-%d", cfg.SourcePrefix, i), cfg.DialOptions)
		if err != nil {
			for _, r := range rs[:i] {
				r.abort()
			}
			return nil, fmt.Errorf("bench: raw stream: %w", err)
		}
		r.tablePrefix = cfg.TablePrefix
		rs[i] = r
	}
	sendCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	start := time.Now()
	limit := cfg.batchesPerSource()
	var errs errorList
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.send(sendCtx, cfg.BatchSize, limit); err != nil {
				errs.add(err)
			}
		}()
	}
	var stopProgress func()
	if cfg.Progress != nil {
		stopProgress = rawProgress(cfg, start, rs)
	}
	// A stream blocked in Send (a server that stopped reading) sees no
	// deadline: once no answer has come for the grace period, the streams
	// get one more before they are cut.
	var cut *time.Timer
	stopWatch := watchStall(cfg.Grace, func() uint64 {
		var n uint64
		for _, r := range rs {
			n += r.answered()
		}
		return n
	}, func() {
		cut = time.AfterFunc(cfg.Grace, func() {
			for _, r := range rs {
				r.cancel()
			}
		})
	})
	defer func() {
		stopWatch()
		if cut != nil {
			cut.Stop()
		}
	}()
	wg.Wait()
	sendSecs := time.Since(start).Seconds()
	var winEntries, winBytes uint64
	for _, r := range rs {
		r.mu.Lock()
		winEntries += r.ackedEntries
		winBytes += r.ackedBytes
		r.mu.Unlock()
	}
	var end time.Time
	drainEnd := time.Now().Add(cfg.Grace) // one grace period for all the streams
	for _, r := range rs {
		if err := r.finish(ctx, drainEnd); err != nil {
			errs.add(err)
		}
		if r.lastAck.After(end) {
			end = r.lastAck
		}
	}
	if stopProgress != nil {
		stopProgress()
	}
	if end.IsZero() {
		end = time.Now()
	}
	s := &Summary{Mode: "raw", Sources: cfg.Sources, BatchSize: cfg.BatchSize, Seconds: end.Sub(start).Seconds()}
	var ackH client.Histogram
	for _, r := range rs {
		r.mu.Lock()
		r.addTo(s)
		ackH.Merge(&r.hist)
		if sent, ans := uint64(len(r.sent)), r.answeredLocked(); sent > ans {
			s.UnackedBatches += sent - ans
			s.UnackedEntries += (sent - ans) * uint64(cfg.BatchSize)
		}
		r.mu.Unlock()
	}
	s.AckLatency = ackH.Summary()
	s.window(sendSecs, winEntries, winBytes)
	s.finish(&errs)
	return s, nil
}

type rawSent struct {
	at      time.Time
	size    int
	entries int
}

// rawSource is one raw stream.
type rawSource struct {
	benchStream
	src  []byte
	done chan struct{}

	tablePrefix string // Config.TablePrefix

	mu   sync.Mutex
	sent []rawSent // by batch number - first
	streamCounts
	hist    client.Histogram
	lastAck time.Time
	recvErr error
}

func openRaw(ctx context.Context, addr, src string, dopts []grpc.DialOption) (*rawSource, error) {
	bs, err := dialStream(ctx, addr, src, dopts)
	if err != nil {
		return nil, err
	}
	r := &rawSource{benchStream: bs, src: []byte(src), done: make(chan struct{}), streamCounts: newStreamCounts()}
	go r.read()
	return r, nil
}

// benchStream is one source's native stream, connected: what the raw
// baseline and the frame generator share.
type benchStream struct {
	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]
	cancel context.CancelFunc
	first  uint64 // the first batch number to send: Connected.last_sequence + 1
	// firstEntry is Connected.last_entry_sequence: entries are numbered
	// after it.
	firstEntry uint64
}

// dialStream opens a stream for source id at addr and connects it in batch
// mode with the binary protocol.
func dialStream(ctx context.Context, addr, id string, dopts []grpc.DialOption) (benchStream, error) {
	var bs benchStream
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dopts...)...)
	if err != nil {
		return bs, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	bs.conn, bs.cancel = conn, cancel
	bs.stream, err = lakehousev1.NewCDCServiceClient(conn).Stream(sctx)
	if err != nil {
		bs.abort()
		return bs, err
	}
	err = bs.stream.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{
		SourceId: id, ProtocolVersion: 1, SequenceMode: lakehousev1.SequenceMode_SEQUENCE_MODE_BATCH,
		Capabilities: &lakehousev1.Capabilities{BinaryProtocol: true, Batching: true, MaxBatchSize: workload.W1BatchSize, MaxMessageSize: 4 << 20},
	}}})
	if err != nil {
		bs.abort()
		return bs, err
	}
	resp, err := bs.stream.Recv()
	if err != nil || resp.GetConnected() == nil {
		bs.abort()
		return bs, fmt.Errorf("waiting for connected: %v (%w)", resp, err)
	}
	bs.first = resp.GetConnected().GetLastSequence() + 1
	bs.firstEntry = resp.GetConnected().GetLastEntrySequence()
	return bs, nil
}

func (bs *benchStream) abort() {
	bs.cancel()
	_ = bs.conn.Close()
}

func (r *rawSource) read() {
	defer close(r.done)
	for {
		resp, err := r.stream.Recv()
		now := time.Now()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.mu.Lock()
				r.recvErr = err
				r.mu.Unlock()
			}
			return
		}
		r.mu.Lock()
		switch k := resp.GetKind().(type) {
		case *lakehousev1.StreamResponse_Ack:
			i := int(k.Ack.GetSequenceNumber() - r.first)
			if k.Ack.GetStatus() == lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
				r.dups++
			} else if i >= 0 && i < len(r.sent) {
				s := r.sent[i]
				r.ackedBatches++
				r.ackedEntries += uint64(s.entries)
				r.ackedBytes += uint64(s.size)
				r.hist.Record(now.Sub(s.at))
				r.lastAck = now
			}
		case *lakehousev1.StreamResponse_Nack:
			r.nacks[client.NackReasonName(k.Nack.GetReason())]++
		}
		r.mu.Unlock()
	}
}

// send sends pooled W1 frames (FramePool), patched for each batch.
func (r *rawSource) send(ctx context.Context, batchSize int, limit int64) error {
	pool, err := NewFramePool(string(r.src), batchSize, r.tablePrefix)
	if err != nil {
		return err
	}
	for k := int64(0); limit == 0 || k < limit; k++ {
		if ctx.Err() != nil {
			return nil
		}
		buf := pool.Frame(k, r.first+uint64(k), r.firstEntry)
		r.mu.Lock()
		r.sent = append(r.sent, rawSent{at: time.Now(), size: len(buf), entries: batchSize})
		r.sentEntries += uint64(batchSize)
		r.mu.Unlock()
		if err := r.stream.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: buf}}); err != nil {
			return fmt.Errorf("raw send: %w", err)
		}
	}
	return nil
}

// answered counts the batches the server answered (ack, duplicate or nack).
func (r *rawSource) answered() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answeredLocked()
}

func (r *rawSource) answeredLocked() uint64 {
	n := r.ackedBatches + r.dups
	for _, v := range r.nacks {
		n += v
	}
	return n
}

// finish half-closes the stream, waits for the server's answers (until ctx
// ends or the deadline) and releases the connection.
func (r *rawSource) finish(ctx context.Context, deadline time.Time) error {
	defer r.abort()
	if err := r.stream.CloseSend(); err != nil {
		return err
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-r.done:
	case <-ctx.Done():
	case <-t.C:
	}
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recvErr != nil && ctx.Err() == nil {
		return fmt.Errorf("raw stream %s: %w", r.src, r.recvErr)
	}
	return nil
}

func rawProgress(cfg Config, start time.Time, rs []*rawSource) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				var e, b uint64
				for _, r := range rs {
					r.mu.Lock()
					e += r.ackedEntries
					b += r.ackedBytes
					r.mu.Unlock()
				}
				el := now.Sub(start).Seconds()
				fmt.Fprintf(cfg.Progress, "%6.1fs  raw  %10.0f entries/s  %7.2f MB/s  acked %d entries\n", el, float64(e)/el, float64(b)/1e6/el, e)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// FlushServer asks the server at addr to commit its buffer now (the unary
// Flush RPC) and waits for the result, so that consecutive runs start from an
// empty buffer.
func FlushServer(ctx context.Context, addr string, dopts ...grpc.DialOption) (*lakehousev1.FlushResult, error) {
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dopts...)...)
	if err != nil {
		return nil, fmt.Errorf("bench: flush: %w", err)
	}
	defer conn.Close()
	resp, err := lakehousev1.NewCDCServiceClient(conn).Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
	if err != nil {
		return nil, fmt.Errorf("bench: flush: %w", err)
	}
	return resp.GetResult(), nil
}

// streamCounts are the counters of one bench stream (raw or frames), guarded
// by the stream's mutex.
type streamCounts struct {
	sentEntries  uint64
	ackedEntries uint64
	ackedBatches uint64
	ackedBytes   uint64
	dups         uint64
	nacks        map[string]uint64 // by reason name
}

func newStreamCounts() streamCounts { return streamCounts{nacks: map[string]uint64{}} }

// addTo adds the counters to a run's summary.
func (c *streamCounts) addTo(s *Summary) {
	s.Entries += c.ackedEntries
	s.Batches += c.ackedBatches
	s.Bytes += c.ackedBytes
	s.SentEntries += c.sentEntries
	s.Duplicates += c.dups
	for k, v := range c.nacks {
		if s.Nacks == nil {
			s.Nacks = map[string]uint64{}
		}
		s.Nacks[k] += v
	}
}
