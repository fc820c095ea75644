package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

type batchState uint8

const (
	stQueued   batchState = iota // waiting to be (re)sent
	stInflight                   // sent on the current stream, no answer yet
	stAcked                      // acknowledged, waiting for Persisted (wait-for-persisted mode)
)

// pendingBatch is a sealed batch held until acknowledged (or persisted).
type pendingBatch struct {
	id         uint64 // client-wide, in seal order; part of the correlation id
	seq        uint64 // batch number; 0 until first sent (or after a renumbering)
	entries    []Entry
	nbytes     int   // sum of the entries' encoded sizes
	ts         int64 // ms since the Unix epoch, when sealed
	state      batchState
	tx         uint64 // current transmission (client-wide counter), in the correlation id
	attempts   int    // transmissions
	failures   int    // failures counted against the retry limit
	lastReason lakehousev1.NackReason
	firstSent  time.Time
	lastSent   time.Time
	lastSize   int

	done     chan struct{} // closed once acknowledged or given up on
	signaled bool
	ack      Ack
	err      error
}

type watchItem struct {
	seq       uint64
	firstSent time.Time
}

// maxWatch bounds the acked batches remembered for persisted latencies.
const maxWatch = 1 << 16

type counters struct {
	batchesSent, entriesSent, retried, bytesSent uint64
	batchesAcked, entriesAcked, duplicates       uint64
	batchesFailed, entriesFailed                 uint64
	staleNacks, staleAcks                        uint64
	reconnects, heartbeats, pongs                uint64
	nacks                                        map[lakehousev1.NackReason]uint64
}

// Client streams the CDC entries of one source to the server. It is safe for
// concurrent use. Create it with Dial or New and always Close it.
type Client struct {
	cfg      config
	sourceID string
	srcBytes []byte
	rpc      lakehousev1.CDCServiceClient
	owned    *grpc.ClientConn
	log      *slog.Logger
	clock    Clock
	breaker  *CircuitBreaker

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	runDone  chan struct{}
	wake     chan struct{} // wakes the writer
	sealWake chan struct{} // wakes the sealer

	evMu sync.Mutex
	evq  []func()

	mu           sync.Mutex
	changed      chan struct{} // closed and replaced on every state change
	state        ConnState
	cur          []Entry
	curBytes     int
	curStart     time.Time
	pending      []*pendingBatch
	nextID       uint64
	nextSeq      uint64
	txCounter    uint64
	resumeAt     time.Time
	seqBounces   int  // INVALID_SEQUENCE nacks behind a batch in flight, since the last ack
	slow         bool // the last ack said BUFFERED: one batch in flight at a time
	sessionErr   error
	closing      bool // Close called: no new entries
	stopping     bool // Close drained: end the stream
	failErr      error
	errs         []error // reported errors not yet returned by Flush or Close
	persistedSeq uint64
	lastAcked    uint64
	watch        []watchItem
	st           counters
	ackHist      Histogram
	persistHist  Histogram
}

// Dial connects to the server at addr (host:port) for source sourceID and
// waits until the stream is up (Connected received) or ctx ends. The
// connection uses insecure transport credentials unless WithDialOptions says
// otherwise; Close closes it.
func Dial(ctx context.Context, addr, sourceID string, opts ...Option) (*Client, error) {
	var tmp config
	for _, o := range opts {
		o(&tmp)
	}
	dopts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, tmp.dialOptions...)
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c, err := New(conn, sourceID, opts...)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	c.owned = conn
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
func New(conn grpc.ClientConnInterface, sourceID string, opts ...Option) (*Client, error) {
	if conn == nil {
		return nil, errors.New("client: nil connection")
	}
	if sourceID == "" {
		return nil, errors.New("client: empty source id")
	}
	if len(sourceID) > 0xFFFF {
		return nil, errors.New("client: source id longer than 65535 bytes")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.clock == nil {
		cfg.clock = SystemClock()
	}
	c := &Client{
		cfg:      cfg,
		sourceID: sourceID,
		srcBytes: []byte(sourceID),
		rpc:      lakehousev1.NewCDCServiceClient(conn),
		log:      cfg.logger.With("source", sourceID),
		clock:    cfg.clock,
		runDone:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		sealWake: make(chan struct{}, 1),
		changed:  make(chan struct{}),
		state:    StateConnecting,
		nextID:   1,
	}
	c.st.nacks = make(map[lakehousev1.NackReason]uint64)
	bc := cfg.breaker
	if bc.Clock == nil {
		bc.Clock = cfg.clock
	}
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

// ---- events ----

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

func (c *Client) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
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

// ---- sending ----

// Send adds e to the current batch; the batch is sent when full or after the
// batch timeout. It blocks while the pending batches are at their limit,
// until there is room or ctx ends. It fails fast with an error matching
// ErrCircuitOpen while the circuit breaker is open. e's slices must not be
// modified afterwards.
func (c *Client) Send(ctx context.Context, e Entry) error {
	if err := c.breaker.check(); err != nil {
		return err
	}
	c.mu.Lock()
	err := c.addLocked(ctx, &e)
	c.mu.Unlock()
	c.flushEvents()
	return err
}

// SendMany adds entries in order as Send does. On error the entries before
// the failing one were accepted (the error says how many).
func (c *Client) SendMany(ctx context.Context, entries []Entry) error {
	if err := c.breaker.check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.flushEvents()
	}()
	for i := range entries {
		if err := c.addLocked(ctx, &entries[i]); err != nil {
			return fmt.Errorf("client: %d of %d entries accepted: %w", i, len(entries), err)
		}
	}
	return nil
}

func (c *Client) addLocked(ctx context.Context, e *Entry) error {
	sz := e.EncodedSize()
	for {
		if err := c.usableLocked(); err != nil {
			return err
		}
		full := len(c.cur) > 0 && (len(c.cur) >= c.cfg.maxBatchEntries || c.curBytes+sz > c.cfg.maxBatchBytes)
		if !full {
			break
		}
		if len(c.pending) < c.cfg.maxPending {
			c.sealLocked()
			break
		}
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
	}
	if len(c.cur) == 0 {
		c.curStart = c.clock.Now()
		if c.cur == nil {
			c.cur = make([]Entry, 0, min(c.cfg.maxBatchEntries, 1024))
		}
		select {
		case c.sealWake <- struct{}{}:
		default:
		}
	}
	c.cur = append(c.cur, *e)
	c.curBytes += sz
	if len(c.cur) >= c.cfg.maxBatchEntries && len(c.pending) < c.cfg.maxPending {
		c.sealLocked()
	}
	return nil
}

// sealLocked turns the current batch into a pending batch (ignoring the
// pending limit: callers check it).
func (c *Client) sealLocked() {
	if len(c.cur) == 0 {
		return
	}
	c.pushLocked(c.cur, c.curBytes)
	c.cur = nil
	c.curBytes = 0
}

func (c *Client) pushLocked(entries []Entry, nbytes int) *pendingBatch {
	b := &pendingBatch{
		id:      c.nextID,
		entries: entries,
		nbytes:  nbytes,
		ts:      time.Now().UnixMilli(),
		done:    make(chan struct{}),
	}
	c.nextID++
	c.pending = append(c.pending, b)
	c.broadcastLocked()
	c.wakeWriter()
	return b
}

// sealWaitLocked seals the current batch, waiting for room first.
func (c *Client) sealWaitLocked(ctx context.Context) error {
	for len(c.cur) > 0 && len(c.pending) >= c.cfg.maxPending && !c.closing {
		if err := c.waitChangeLocked(ctx); err != nil {
			return fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
		if err := c.usableLocked(); err != nil {
			return err
		}
	}
	c.sealLocked()
	return nil
}

// SendBatch sends entries as one batch of their own (after the current
// batch, which it seals first) and waits for its ack. If ctx ends first, the
// batch stays pending and is still delivered; the error then matches
// ctx.Err(). A batch the client gives up on returns a *BatchError.
func (c *Client) SendBatch(ctx context.Context, entries []Entry) (Ack, error) {
	if len(entries) == 0 {
		return Ack{}, errors.New("client: empty batch")
	}
	if err := c.breaker.check(); err != nil {
		return Ack{}, err
	}
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return Ack{}, err
	}
	if err := c.sealWaitLocked(ctx); err != nil {
		c.mu.Unlock()
		return Ack{}, err
	}
	for len(c.pending) >= c.cfg.maxPending {
		if err := c.waitChangeLocked(ctx); err != nil {
			c.mu.Unlock()
			return Ack{}, fmt.Errorf("client: waiting for room among pending batches: %w", err)
		}
		if err := c.usableLocked(); err != nil {
			c.mu.Unlock()
			return Ack{}, err
		}
	}
	n := 0
	for i := range entries {
		n += entries[i].EncodedSize()
	}
	b := c.pushLocked(entries, n)
	c.mu.Unlock()
	c.flushEvents()
	select {
	case <-b.done:
		return b.ack, b.err
	case <-ctx.Done():
		return Ack{}, fmt.Errorf("client: waiting for the ack of a batch: %w", ctx.Err())
	}
}

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

func (c *Client) takeErrsLocked() []error {
	errs := c.errs
	c.errs = nil
	return errs
}

// Flush sends the current batch, waits until every batch sealed so far is
// acknowledged (in wait-for-persisted mode: persisted), and asks the server
// to commit its buffer now (the unary Flush RPC). It returns the server's
// flush result and, joined, the errors reported since the last Flush or
// Close (each *BatchError is returned once).
func (c *Client) Flush(ctx context.Context) (*lakehousev1.FlushResult, error) {
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		errs := c.takeErrsLocked()
		c.mu.Unlock()
		return nil, errors.Join(append(errs, err)...)
	}
	if err := c.sealWaitLocked(ctx); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	target := c.nextID - 1
	c.mu.Unlock()
	c.flushEvents()
	notAcked := func() bool {
		for _, b := range c.pending {
			if b.id <= target && b.state != stAcked {
				return false
			}
		}
		return true
	}
	var errs []error
	if err := c.waitFor(ctx, notAcked); err != nil {
		errs = append(errs, fmt.Errorf("client: flush: waiting for acks: %w", err))
	}
	var res *lakehousev1.FlushResult
	if len(errs) == 0 {
		resp, err := c.rpc.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("client: flush RPC: %w", err))
		default:
			res = resp.GetResult()
			if res != nil && !res.GetSuccess() && !res.GetUsedFallback() {
				errs = append(errs, fmt.Errorf("client: server flush failed: %s", res.GetError()))
			}
		}
	}
	if len(errs) == 0 && c.cfg.waitPersisted {
		gone := func() bool {
			for _, b := range c.pending {
				if b.id <= target {
					return false
				}
			}
			return true
		}
		if err := c.waitFor(ctx, gone); err != nil {
			errs = append(errs, fmt.Errorf("client: flush: waiting for persisted: %w", err))
		}
	}
	c.mu.Lock()
	errs = append(c.takeErrsLocked(), errs...)
	c.mu.Unlock()
	return res, errors.Join(errs...)
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
	c.mu.Unlock()
	c.wakeWriter()
	select {
	case <-c.runDone:
	case <-ctx.Done():
	}
	c.cancel()
	c.wg.Wait()
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
	for len(c.pending) > 0 {
		b := c.pending[0]
		c.giveUpLocked(b, lakehousev1.NackReason_NACK_REASON_UNSPECIFIED, cause, false)
	}
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
	var flushAfter time.Time // zero: not asked yet in this state
	asked := false
	for {
		c.mu.Lock()
		if c.failErr != nil || (len(c.pending) == 0 && len(c.cur) == 0) {
			c.mu.Unlock()
			return nil
		}
		allAcked := true
		for _, b := range c.pending {
			if b.state != stAcked {
				allAcked = false
				break
			}
		}
		ch := c.changed
		c.mu.Unlock()
		c.flushEvents()
		var tc <-chan time.Time
		var stop func() bool
		if c.cfg.waitPersisted && allAcked {
			now := c.clock.Now()
			if !asked || !now.Before(flushAfter) {
				asked = true
				_, err := c.rpc.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_SHUTDOWN})
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

// giveUpLocked removes b from pending and reports it as a *BatchError. With
// renumber, the unaccepted batches after b lose their numbers (the server
// still expects b's number).
func (c *Client) giveUpLocked(b *pendingBatch, reason lakehousev1.NackReason, cause error, renumber bool) {
	idx := c.indexLocked(b)
	if idx < 0 {
		return
	}
	c.pending = append(c.pending[:idx], c.pending[idx+1:]...)
	err := &BatchError{Seq: b.seq, Entries: b.entries, Reason: reason, Attempts: b.attempts, Err: cause}
	c.st.batchesFailed++
	c.st.entriesFailed += uint64(len(b.entries))
	c.errs = append(c.errs, err)
	b.err = err
	c.signalLocked(b)
	c.log.Warn("client: gave up on batch", "seq", b.seq, "entries", len(b.entries), "reason", reason, "err", cause)
	if f := c.cfg.onError; f != nil {
		c.emit(func() { f(err) })
	}
	if renumber && b.seq != 0 && b.state != stAcked {
		for _, p := range c.pending[idx:] {
			if p.state != stAcked && p.seq > b.seq {
				p.seq = 0
				p.state = stQueued
			}
		}
		c.nextSeq = b.seq
	}
	c.broadcastLocked()
	c.wakeWriter()
}

func (c *Client) signalLocked(b *pendingBatch) {
	if !b.signaled {
		b.signaled = true
		close(b.done)
	}
}

func (c *Client) indexLocked(b *pendingBatch) int {
	for i, p := range c.pending {
		if p == b {
			return i
		}
	}
	return -1
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
	for len(c.pending) > 0 {
		c.giveUpLocked(c.pending[0], c.pending[0].lastReason, fmt.Errorf("%w: %w", ErrFailed, err), false)
	}
	c.setStateLocked(StateFailed, err)
	c.log.Error("client: failed", "err", err)
	if f := c.cfg.onError; f != nil {
		ferr := fmt.Errorf("%w: %w", ErrFailed, err)
		c.emit(func() { f(ferr) })
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.flushEvents()
}

// ---- stats ----

// Stats is a snapshot of a client's counters.
type Stats struct {
	// SourceID is the client's source.
	SourceID string `json:"sourceId"`
	// State is the connection state.
	State ConnState `json:"state"`
	// BatchesSent and EntriesSent count first transmissions.
	BatchesSent uint64 `json:"batchesSent"`
	// EntriesSent counts the entries of first transmissions.
	EntriesSent uint64 `json:"entriesSent"`
	// BatchesRetried counts retransmissions.
	BatchesRetried uint64 `json:"batchesRetried"`
	// BytesSent counts the encoded bytes of all transmissions.
	BytesSent uint64 `json:"bytesSent"`
	// BatchesAcked counts acknowledged batches (duplicates included).
	BatchesAcked uint64 `json:"batchesAcked"`
	// EntriesAcked counts their entries.
	EntriesAcked uint64 `json:"entriesAcked"`
	// Duplicates counts batches the server already had.
	Duplicates uint64 `json:"duplicates"`
	// BatchesFailed counts batches given up on.
	BatchesFailed uint64 `json:"batchesFailed"`
	// EntriesFailed counts their entries.
	EntriesFailed uint64 `json:"entriesFailed"`
	// Nacks counts nacks by reason (stale ones excluded).
	Nacks map[string]uint64 `json:"nacks,omitempty"`
	// StaleNacks counts nacks of earlier transmissions, ignored.
	StaleNacks uint64 `json:"staleNacks"`
	// PendingBatches is the number of sealed batches not yet acknowledged
	// (or persisted, in wait-for-persisted mode).
	PendingBatches int `json:"pendingBatches"`
	// PendingEntries is the number of their entries.
	PendingEntries int `json:"pendingEntries"`
	// BufferedEntries is the number of entries in the current, unsealed batch.
	BufferedEntries int `json:"bufferedEntries"`
	// Reconnects counts streams opened after the first.
	Reconnects uint64 `json:"reconnects"`
	// Heartbeats counts heartbeats sent; Pongs the answers.
	Heartbeats uint64 `json:"heartbeats"`
	// Pongs counts pongs received.
	Pongs uint64 `json:"pongs"`
	// LastAckedSequence is the highest batch number acknowledged.
	LastAckedSequence uint64 `json:"lastAckedSequence"`
	// PersistedSequence is the highest Persisted watermark received.
	PersistedSequence uint64 `json:"persistedSequence"`
	// AckLatency digests the time from the last transmission to the ack.
	AckLatency LatencySummary `json:"ackLatency"`
	// PersistedLatency digests the time from the first transmission to the
	// Persisted watermark.
	PersistedLatency LatencySummary `json:"persistedLatency"`
	// Breaker is the circuit breaker's snapshot.
	Breaker BreakerStats `json:"breaker"`
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	br := c.breaker.Stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{
		SourceID:          c.sourceID,
		State:             c.state,
		BatchesSent:       c.st.batchesSent,
		EntriesSent:       c.st.entriesSent,
		BatchesRetried:    c.st.retried,
		BytesSent:         c.st.bytesSent,
		BatchesAcked:      c.st.batchesAcked,
		EntriesAcked:      c.st.entriesAcked,
		Duplicates:        c.st.duplicates,
		BatchesFailed:     c.st.batchesFailed,
		EntriesFailed:     c.st.entriesFailed,
		StaleNacks:        c.st.staleNacks,
		PendingBatches:    len(c.pending),
		BufferedEntries:   len(c.cur),
		Reconnects:        c.st.reconnects,
		Heartbeats:        c.st.heartbeats,
		Pongs:             c.st.pongs,
		LastAckedSequence: c.lastAcked,
		PersistedSequence: c.persistedSeq,
		AckLatency:        c.ackHist.Summary(),
		PersistedLatency:  c.persistHist.Summary(),
		Breaker:           br,
	}
	for _, b := range c.pending {
		s.PendingEntries += len(b.entries)
	}
	if len(c.st.nacks) > 0 {
		s.Nacks = make(map[string]uint64, len(c.st.nacks))
		for k, v := range maps.All(c.st.nacks) {
			s.Nacks[NackReasonName(k)] = v
		}
	}
	return s
}

// LatencyHistograms returns copies of the ack and persisted latency
// histograms, for merging across clients.
func (c *Client) LatencyHistograms() (ack, persisted Histogram) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ackHist, c.persistHist
}

// NackReasonName returns the short lower-case name of a nack reason
// ("buffer_full", "invalid_sequence", ...).
func NackReasonName(r lakehousev1.NackReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "NACK_REASON_"))
}

// correlation ids are "<batch id>.<transmission>".
func appendCorr(dst []byte, id, tx uint64) []byte {
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, tx, 10)
}

func parseCorr(s string) (id, tx uint64, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found {
		return 0, 0, false
	}
	id, err1 := strconv.ParseUint(a, 10, 64)
	tx, err2 := strconv.ParseUint(b, 10, 64)
	return id, tx, err1 == nil && err2 == nil
}
