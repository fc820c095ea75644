package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Client streams the CDC entries of one source to the server. It is safe for
// concurrent use. Create it with Dial or New and always Close it.
//
// The code is split by concern: the pending batches and their numbering
// (queue.go), adding entries and sealing batches (producer.go), the
// connection and session loop (session.go), writing on the stream
// (writer.go), acks, nacks and giving up (acks.go), options (options.go) and
// counters (stats.go).
type Client struct {
	cfg      config
	sourceID string
	srcBytes []byte
	rpc      lakehousev1.CDCServiceClient
	owned    *grpc.ClientConn // set by Dial: redirects are followed (redirect.go)
	log      *slog.Logger
	clock    Clock
	breaker  *CircuitBreaker

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	runDone  chan struct{}
	stopCh   chan struct{} // closed when Close has drained: stop reconnecting
	wake     chan struct{} // wakes the writer
	sealWake chan struct{} // wakes the sealer

	evMu sync.Mutex
	evq  []func()

	mu      sync.Mutex    // guards everything below
	changed chan struct{} // closed and replaced on every state change
	state   ConnState
	q       *queue // the sealed batches: the only owner of their state

	// The current, unsealed batch (producer.go).
	cur      []Entry
	curBytes int
	curStart time.Time

	// Flow control (acks.go, writer.go).
	resumeAt   time.Time       // send nothing before
	seqBounces int             // INVALID_SEQUENCE nacks behind a batch in flight, since the last ack
	pressure   int             // backpressure nacks without a retry delay, since the last ack
	slow       bool            // one batch in flight at a time (BUFFERED ack or backpressure nack)
	sessionErr error           // ends the current session (SHUTTING_DOWN)
	redir      *redirectTarget // the followed redirect's connection (redirect.go)
	// Redirects followed since the last Connected; the run goroutine's own.
	redirStreak int

	closing  bool // Close called: no new entries
	stopping bool // Close drained: end the stream
	failErr  error
	errs     []error // reported errors not yet returned by Flush or Close
	st       stats
}

// Dial connects to the server at addr (host:port) for source sourceID and
// waits until the stream is up (Connected received) or ctx ends. The
// connection uses insecure transport credentials unless WithDialOptions says
// otherwise; Close closes it. Options out of range return an error matching
// ErrInvalidOption.
func Dial(ctx context.Context, addr, sourceID string, opts ...Option) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, cfg.ownDialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c, err := newClient(conn, conn, sourceID, cfg)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := c.WaitConnected(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(cctx)
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	return c, nil
}

// New returns a client for source sourceID over conn. It connects in the
// background (use WaitConnected to wait); entries sent meanwhile are queued.
// Options out of range return an error matching ErrInvalidOption.
func New(conn grpc.ClientConnInterface, sourceID string, opts ...Option) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return newClient(conn, nil, sourceID, cfg)
}

// newClient starts a client over conn; owned is conn when the client made it
// (Dial): it closes it, and follows redirects (set before run starts).
func newClient(conn grpc.ClientConnInterface, owned *grpc.ClientConn, sourceID string, cfg config) (*Client, error) {
	if conn == nil {
		return nil, errors.New("client: nil connection")
	}
	if sourceID == "" {
		return nil, errors.New("client: empty source id")
	}
	if len(sourceID) > 0xFFFF {
		return nil, errors.New("client: source id longer than 65535 bytes")
	}
	c := &Client{
		cfg:      cfg,
		sourceID: sourceID,
		srcBytes: []byte(sourceID),
		rpc:      lakehousev1.NewCDCServiceClient(withTokenConn(conn, cfg.token)),
		owned:    owned,
		log:      cfg.logger.With("source", sourceID),
		clock:    cfg.clock,
		runDone:  make(chan struct{}),
		stopCh:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		sealWake: make(chan struct{}, 1),
		changed:  make(chan struct{}),
		state:    StateConnecting,
		q:        newQueue(cfg.maxPending, cfg.waitPersisted),
	}
	c.st.nacks = make(map[lakehousev1.NackReason]uint64)
	bc := cfg.breaker
	userCB := bc.OnStateChange
	bc.OnStateChange = func(from, to BreakerState) {
		c.log.Info("client: circuit breaker state change", "from", from, "to", to)
		if userCB != nil {
			c.emit(func() { userCB(from, to) })
		}
	}
	c.breaker = NewCircuitBreaker(bc)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.run()
	go c.sealer()
	return c, nil
}

// SourceID returns the client's source id.
func (c *Client) SourceID() string { return c.sourceID }

// Breaker returns the client's circuit breaker.
func (c *Client) Breaker() *CircuitBreaker { return c.breaker }

// WaitConnected waits until the stream is up, the client fails, or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.failErr != nil {
			return fmt.Errorf("%w: %w", ErrFailed, c.failErr)
		}
		switch c.state {
		case StateConnected:
			return nil
		case StateClosed:
			return ErrClosed
		}
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for connection: %w", err)
		}
	}
}

// Close sends the current batch, waits for the acks of all pending batches
// (in wait-for-persisted mode it asks the server to flush and waits for the
// Persisted watermark), closes the stream, stops all goroutines and closes a
// connection made by Dial. Batches still pending when ctx ends are returned
// as *BatchError values with their entries, joined with the errors reported
// since the last Flush. Close may be called once; later calls return
// ErrClosed.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closing = true
	c.sealLocked()
	c.broadcastLocked()
	c.mu.Unlock()
	c.wakeWriter()

	drainErr := c.waitDrained(ctx)

	c.mu.Lock()
	c.stopping = true
	close(c.stopCh)
	c.mu.Unlock()
	c.wakeWriter()
	select {
	case <-c.runDone:
	case <-ctx.Done():
	}
	c.cancel()
	c.wg.Wait()
	c.closeRedirect()
	if c.owned != nil {
		if err := c.owned.Close(); err != nil {
			c.log.Debug("client: closing connection", "err", err)
		}
	}

	c.mu.Lock()
	cause := ErrClosed
	if drainErr != nil {
		cause = fmt.Errorf("%w before the ack: %w", ErrClosed, drainErr)
	}
	c.giveUpAllLocked(cause, false)
	errs := c.takeErrsLocked()
	if c.failErr != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrFailed, c.failErr))
	}
	c.setStateLocked(StateClosed, nil)
	c.mu.Unlock()
	c.flushEvents()
	return errors.Join(errs...)
}

// waitDrained waits until nothing is pending (asking the server to flush in
// wait-for-persisted mode), the client fails, or ctx ends.
func (c *Client) waitDrained(ctx context.Context) error {
	var flushAfter time.Time
	asked := false
	for {
		c.mu.Lock()
		if c.failErr != nil || (c.q.len() == 0 && len(c.cur) == 0) {
			c.mu.Unlock()
			return nil
		}
		allAcked := c.q.ackedThrough(c.q.lastID())
		ch := c.changed
		c.mu.Unlock()
		c.flushEvents()
		var tc <-chan time.Time
		var stop func() bool
		if c.cfg.waitPersisted && allAcked {
			now := c.clock.Now()
			if !asked || !now.Before(flushAfter) {
				asked = true
				rpc, _ := c.streamRPC()
				_, err := rpc.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_SHUTDOWN})
				if err != nil {
					c.log.Warn("client: flush before close failed", "err", err)
				}
				// Ask again if the watermark has not come after a while.
				flushAfter = c.clock.Now().Add(c.cfg.reconnectDelay)
			}
			t := c.clock.NewTimer(flushAfter.Sub(c.clock.Now()))
			tc = t.C()
			stop = t.Stop
		}
		var err error
		select {
		case <-ch:
		case <-tc:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if stop != nil {
			stop()
		}
		if err != nil {
			return err
		}
	}
}

// fail makes the client fail for good: every pending batch is reported.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.failErr != nil {
		c.mu.Unlock()
		return
	}
	c.failErr = err
	c.sealLocked()
	ferr := fmt.Errorf("%w: %w", ErrFailed, err)
	c.giveUpAllLocked(ferr, true)
	c.setStateLocked(StateFailed, err)
	c.log.Error("client: failed", "err", err)
	if f := c.cfg.onError; f != nil {
		c.emit(func() { f(ferr) })
	}
	c.mu.Unlock()
	c.flushEvents()
}

// usableLocked says whether new entries are accepted.
func (c *Client) usableLocked() error {
	if c.failErr != nil {
		return fmt.Errorf("%w: %w", ErrFailed, c.failErr)
	}
	if c.closing {
		return ErrClosed
	}
	return nil
}

func (c *Client) takeErrsLocked() []error {
	errs := c.errs
	c.errs = nil
	return errs
}

// ---- state changes and waiting ----

func (c *Client) setStateLocked(to ConnState, err error) {
	from := c.state
	if from == to {
		return
	}
	c.state = to
	c.log.Debug("client: state change", "from", from, "to", to, "err", err)
	if f := c.cfg.onStateChange; f != nil {
		sc := StateChange{From: from, To: to, Err: err}
		c.emit(func() { f(sc) })
	}
	c.broadcastLocked()
}

func (c *Client) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitChangeLocked releases c.mu until the next state change or ctx's end.
func (c *Client) waitChangeLocked(ctx context.Context) error {
	ch := c.changed
	c.mu.Unlock()
	var err error
	select {
	case <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.ctx.Done():
		err = ErrClosed
	}
	c.mu.Lock()
	return err
}

// waitFor waits until pred (called with c.mu held) holds, the client fails,
// or ctx ends.
func (c *Client) waitFor(ctx context.Context, pred func() bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !pred() {
		if c.failErr != nil {
			return nil // the failure's batch errors are in c.errs
		}
		if err := c.waitChangeLocked(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ---- callbacks ----

// emit queues a callback; it runs at the next flushEvents, without c.mu.
func (c *Client) emit(f func()) {
	c.evMu.Lock()
	c.evq = append(c.evq, f)
	c.evMu.Unlock()
}

// flushEvents runs queued callbacks; it must be called without c.mu held.
func (c *Client) flushEvents() {
	for {
		c.evMu.Lock()
		q := c.evq
		c.evq = nil
		c.evMu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, f := range q {
			c.safeCall(f)
		}
	}
}

func (c *Client) safeCall(f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("client: callback panicked", "panic", fmt.Sprint(r))
		}
	}()
	f()
}

// ownDialOptions are the options of a connection the client dials itself
// (Dial, and the owner a redirect names): insecure credentials unless
// WithDialOptions says otherwise, and the keepalive that notices a
// half-open connection.
func (cfg *config) ownDialOptions() []grpc.DialOption {
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if cfg.keepaliveTime > 0 {
		dopts = append(dopts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: cfg.keepaliveTime, Timeout: cfg.keepaliveTimeout, PermitWithoutStream: true,
		}))
	}
	return append(dopts, cfg.dialOptions...)
}
