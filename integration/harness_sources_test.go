//go:build unix

package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/legacychild"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// loadConfig sizes the W1 load of one round of a fault scenario.
type loadConfig struct {
	prefix     string // source ids are prefix-n-0..., prefix-l-0...
	native     int    // Go-client sources
	legacy     int    // legacy children through the bridge
	batchSize  int
	batches    int
	window     int           // batches in flight per source
	rate       float64       // batches per second per source (0: as fast as acks allow)
	ackTimeout time.Duration // clients' and children's ack timeout
}

// load is the W1 traffic of one round: Go clients and legacy children each
// sending batches of consecutive W1 entries until all are acknowledged.
type load struct {
	cfg    loadConfig
	native []*nativeSource
	legacy []*legacySource
	wg     sync.WaitGroup
}

// nativeSource is one Go client sending consecutive W1 entries, a batch of
// batchSize at a time, up to window batches unacknowledged. The client acks
// its batches in order, so the acknowledged entries are always a prefix:
// entries 1..acked.
type nativeSource struct {
	id    string
	cl    *client.Client
	next  atomic.Int64 // batches handed to the client
	acked atomic.Int64 // entries acknowledged (a prefix)
	// breakerRejections counts the SendMany calls the open breaker refused.
	breakerRejections atomic.Int64
	mu                sync.Mutex
	err               error
	gaveUp            error // the first batch the client gave up on
}

// legacySource is one legacy child (simulator) sending W1 batches.
type legacySource struct {
	id    string
	child *legacychild.Child
	sent  atomic.Int64 // entries handed to the child
	err   error
}

// clientOptions are the Go clients' options in the harness: short ack
// timeout and keepalive, reconnecting and retrying for as long as it takes.
func clientOptions(cfg loadConfig) []client.Option {
	return []client.Option{
		client.WithKeepalive(harnessClientKeepalive, harnessClientKATimeout),
		client.WithAckTimeout(cfg.ackTimeout),
		client.WithReconnect(100*time.Millisecond, 1_000_000),
		client.WithMaxRetries(1_000_000),
		client.WithRetryBackoff(50*time.Millisecond, 2, time.Second),
		client.WithBreaker(client.BreakerConfig{OpenTimeout: 100 * time.Millisecond, MaxOpenTimeout: time.Second}),
		client.WithMaxBatchEntries(cfg.batchSize),
		client.WithMaxPendingBatches(cfg.window),
	}
}

// startLoad starts the sources; native ones dial nativeAddr, legacy ones
// connect to bridgeURL. Done waits for them.
func startLoad(ctx context.Context, cfg loadConfig, nativeAddr, bridgeURL string) (*load, error) {
	l := &load{cfg: cfg}
	for i := range cfg.native {
		id := fmt.Sprintf("%s-n-%d", cfg.prefix, i)
		s := &nativeSource{id: id}
		opts := append(clientOptions(cfg),
			client.OnAck(func(a client.Ack) { s.acked.Add(int64(a.Entries)) }),
			client.OnError(func(err error) {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.gaveUp == nil && errors.Is(err, client.ErrGaveUp) {
					s.gaveUp = err
				}
			}))
		cl, err := client.Dial(ctx, nativeAddr, id, opts...)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("dial %s: %w", id, err)
		}
		s.cl = cl
		l.native = append(l.native, s)
		l.wg.Add(1)
		go func() { defer l.wg.Done(); s.run(ctx, cfg) }()
	}
	for i := range cfg.legacy {
		id := fmt.Sprintf("%s-l-%d", cfg.prefix, i)
		ch := &legacychild.Child{Source: id, AckTimeout: cfg.ackTimeout, MaxRetries: 1_000_000, Heartbeat: time.Second,
			Entries: func(first uint64, n int) []codec.Entry { return workload.Entries(int64(first-1), int64(n)) }}
		if err := ch.Start(ctx, bridgeURL); err != nil {
			l.close()
			return nil, fmt.Errorf("legacy child %s: %w", id, err)
		}
		s := &legacySource{id: id, child: ch}
		l.legacy = append(l.legacy, s)
		l.wg.Add(1)
		go func() { defer l.wg.Done(); s.run(ctx, cfg) }()
	}
	return l, nil
}

func (s *nativeSource) run(ctx context.Context, cfg loadConfig) {
	total := int64(cfg.batches * cfg.batchSize)
	start := time.Now()
	for i := range int64(cfg.batches) {
		if !pace(ctx, start, int(i), cfg.rate) {
			return
		}
		// A full batch is sealed at once; SendMany blocks while window
		// batches are unacknowledged.
		if err := s.send(ctx, workload.Entries(i*int64(cfg.batchSize), int64(cfg.batchSize))); err != nil {
			s.fail(err)
			return
		}
		s.next.Add(1)
	}
	for s.acked.Load() < total {
		s.mu.Lock()
		gaveUp := s.gaveUp
		s.mu.Unlock()
		if gaveUp != nil {
			s.fail(gaveUp)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// send hands a batch to the client as a producer should: while the circuit
// breaker is open (after failed connects to an instance that is down, or
// refusals while a source waits for its previous instance) SendMany fails
// fast and accepts nothing, so the batch is offered again once the breaker
// lets calls through.
func (s *nativeSource) send(ctx context.Context, batch []codec.Entry) error {
	for {
		err := s.cl.SendMany(ctx, batch)
		var open *client.CircuitOpenError
		if !errors.As(err, &open) {
			return err
		}
		s.breakerRejections.Add(1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(max(open.RetryAfter, 10*time.Millisecond), time.Second)):
		}
	}
}

func (s *nativeSource) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *legacySource) run(ctx context.Context, cfg loadConfig) {
	start := time.Now()
	for i := 0; i < cfg.batches; i++ {
		if !pace(ctx, start, i, cfg.rate) {
			return
		}
		for s.child.Pending() >= cfg.window {
			select {
			case <-ctx.Done():
				return
			case <-s.child.Disconnected():
				s.err = errors.New("the bridge closed the legacy child's WebSocket (the simulator does not reconnect)")
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		s.child.SendEntries(cfg.batchSize)
		s.sent.Add(int64(cfg.batchSize))
	}
}

// pace waits until batch i is due at rate batches per second from start;
// false when ctx ends first.
func pace(ctx context.Context, start time.Time, i int, rate float64) bool {
	if rate <= 0 {
		return ctx.Err() == nil
	}
	d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second))))
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// wait waits for every source to finish its batches, then for the legacy
// children's last acks; it returns the first failure.
func (l *load) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err := fmt.Errorf("sources did not finish: %w\n%s", ctx.Err(), l.state())
		l.close() // ends SendBatch calls
		<-done
		return err
	}
	var errs []error
	for _, s := range l.native {
		if s.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.id, s.err))
		}
	}
	for _, s := range l.legacy {
		if s.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.id, s.err))
			continue
		}
		d := time.Until(deadlineOr(ctx, 5*time.Minute))
		if _, err := s.child.WaitIdle(d); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		errs = append(errs, errors.New(l.state()))
	}
	return errors.Join(errs...)
}

// state describes every source, for failures.
func (l *load) state() string {
	var b strings.Builder
	for _, s := range l.native {
		st := s.cl.Stats()
		s.mu.Lock()
		gaveUp, failed := s.gaveUp, s.err
		s.mu.Unlock()
		fmt.Fprintf(&b, "%s: %d batches sent, %d entries acked (failed: %v; first given up: %v); client %+v\n",
			s.id, s.next.Load(), s.acked.Load(), failed, gaveUp, st)
	}
	for _, s := range l.legacy {
		st := s.child.Stats()
		st.AckedEntries = nil
		fmt.Fprintf(&b, "%s: %d entries sent, %d pending batches; child %+v\n", s.id, s.sent.Load(), s.child.Pending(), st)
	}
	return b.String()
}

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// close closes the clients and children.
func (l *load) close() {
	for _, s := range l.native {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.cl.Close(ctx)
		cancel()
	}
	for _, s := range l.legacy {
		s.child.Close()
	}
}

// progress is the number of entries acknowledged so far.
func (l *load) progress() int64 {
	var n int64
	for _, s := range l.native {
		n += s.acked.Load()
	}
	for _, s := range l.legacy {
		n += int64(s.child.Stats().Acked) // batches: enough to see progress
	}
	return n
}

// perSource is each source's progress: entries acknowledged (native) or
// batches acknowledged (legacy), -1 for a source that is done.
func (l *load) perSource() []int64 {
	total := int64(l.cfg.batches * l.cfg.batchSize)
	var out []int64
	for _, s := range l.native {
		n := s.acked.Load()
		if n >= total {
			n = -1
		}
		out = append(out, n)
	}
	for _, s := range l.legacy {
		n := int64(s.child.Stats().Acked)
		if s.sent.Load() >= total && s.child.Pending() == 0 {
			n = -1
		}
		out = append(out, n)
	}
	return out
}

// waitProgress waits until every source that is not done has had something
// more acknowledged than at the call (or is done), and returns how long
// that took from since: the time to recover from a fault that ended then.
// It stops early when a Go-client source failed: it will not progress, and
// wait reports why.
func (l *load) waitProgress(ctx context.Context, since time.Time) time.Duration {
	base := l.perSource()
	for ctx.Err() == nil && !l.failed() {
		now, all := l.perSource(), true
		for i, n := range now {
			if n != -1 && n == base[i] {
				all = false
			}
		}
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(since)
}

// failed reports whether a Go-client source stopped on an error.
func (l *load) failed() bool {
	for _, s := range l.native {
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return true
		}
	}
	return false
}

// finished reports whether every source has sent all its batches.
func (l *load) finished() bool {
	for _, s := range l.native {
		if s.acked.Load() < int64(l.cfg.batches*l.cfg.batchSize) {
			return false
		}
	}
	for _, s := range l.legacy {
		if s.sent.Load() < int64(l.cfg.batches*l.cfg.batchSize) || s.child.Pending() > 0 {
			return false
		}
	}
	return true
}

// reconnects is the number of streams the Go clients reopened.
func (l *load) reconnects() uint64 {
	var n uint64
	for _, s := range l.native {
		n += s.cl.Stats().Reconnects
	}
	return n
}
