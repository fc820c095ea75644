package client

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// BreakerState is the state of a CircuitBreaker.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed lets every call through.
	BreakerClosed BreakerState = iota
	// BreakerOpen rejects calls until its open time has passed.
	BreakerOpen
	// BreakerHalfOpen lets one probe call through; its outcome closes or
	// reopens the breaker.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// MarshalText encodes the state as its name.
func (s BreakerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ErrCircuitOpen is matched (errors.Is) by the error a CircuitBreaker returns
// when it rejects a call.
var ErrCircuitOpen = errors.New("client: circuit breaker is open")

// CircuitOpenError is returned when the circuit breaker rejects a call.
type CircuitOpenError struct {
	// RetryAfter is how long until the breaker lets a probe through.
	RetryAfter time.Duration
	// State is the breaker's state when it rejected the call.
	State BreakerState
}

// Error describes the rejection.
func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("client: circuit breaker is %s, retry after %s", e.State, e.RetryAfter)
}

// Is reports whether target is ErrCircuitOpen.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// BreakerConfig configures a CircuitBreaker. Zero fields take the defaults of
// the original (DEFAULT_RPC_CIRCUIT_BREAKER_OPTIONS).
type BreakerConfig struct {
	// FailureThreshold is the number of consecutive failures that opens the
	// breaker. Default 5.
	FailureThreshold int
	// OpenTimeout is the open time after FailureThreshold failures; it doubles
	// with every further consecutive failure. Default 1 s.
	OpenTimeout time.Duration
	// MaxOpenTimeout caps the open time. Default 30 s.
	MaxOpenTimeout time.Duration
	// Clock is the time source. Default SystemClock().
	Clock Clock
	// OnStateChange, when set, is called (without the breaker's lock held)
	// after every state change. A panic in it is recovered.
	OnStateChange func(from, to BreakerState)
}

// BreakerStats is a snapshot of a CircuitBreaker's counters.
type BreakerStats struct {
	// State is the current state.
	State BreakerState `json:"state"`
	// ConsecutiveFailures counts failures since the last success.
	ConsecutiveFailures int `json:"consecutiveFailures"`
	// Failures counts all failures recorded.
	Failures uint64 `json:"failures"`
	// Successes counts all successes recorded.
	Successes uint64 `json:"successes"`
	// Rejections counts calls rejected while open (or half-open with the
	// probe taken).
	Rejections uint64 `json:"rejections"`
	// Opens counts transitions to open.
	Opens uint64 `json:"opens"`
	// LastStateChange is when the state last changed (zero: never).
	LastStateChange time.Time `json:"lastStateChange"`
	// OpenUntil is when an open breaker lets a probe through (zero unless open).
	OpenUntil time.Time `json:"openUntil"`
}

// CircuitBreaker is a closed/open/half-open circuit breaker. It opens after
// FailureThreshold consecutive failures for OpenTimeout x 2^(failures beyond
// the threshold), at most MaxOpenTimeout; then it lets one probe through
// (half-open): a success closes it, a failure reopens it for longer. It is
// safe for concurrent use.
type CircuitBreaker struct {
	cfg BreakerConfig

	mu          sync.Mutex
	state       BreakerState
	consecutive int
	failures    uint64
	successes   uint64
	rejections  uint64
	opens       uint64
	lastChange  time.Time
	openUntil   time.Time
	probeTaken  bool
}

// NewCircuitBreaker returns a closed breaker.
func NewCircuitBreaker(cfg BreakerConfig) *CircuitBreaker {
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = 5
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = time.Second
	}
	if cfg.MaxOpenTimeout <= 0 {
		cfg.MaxOpenTimeout = 30 * time.Second
	}
	if cfg.MaxOpenTimeout < cfg.OpenTimeout {
		cfg.MaxOpenTimeout = cfg.OpenTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	return &CircuitBreaker{cfg: cfg}
}

// openTimeout returns the open time after n consecutive failures (n >= threshold).
func (b *CircuitBreaker) openTimeout(n int) time.Duration {
	d := b.cfg.OpenTimeout
	for i := b.cfg.FailureThreshold; i < n; i++ {
		d *= 2
		if d >= b.cfg.MaxOpenTimeout {
			return b.cfg.MaxOpenTimeout
		}
	}
	return min(d, b.cfg.MaxOpenTimeout)
}

// setState changes the state and returns the callback to run after unlocking.
func (b *CircuitBreaker) setState(to BreakerState, now time.Time) func() {
	from := b.state
	if from == to {
		return nil
	}
	b.state = to
	b.lastChange = now
	b.probeTaken = false
	if to == BreakerOpen {
		b.opens++
		b.openUntil = now.Add(b.openTimeout(b.consecutive))
	} else {
		b.openUntil = time.Time{}
	}
	if b.cfg.OnStateChange == nil {
		return nil
	}
	cb := b.cfg.OnStateChange
	return func() {
		defer func() { _ = recover() }()
		cb(from, to)
	}
}

// advance moves an open breaker whose time has passed to half-open.
func (b *CircuitBreaker) advance(now time.Time) func() {
	if b.state == BreakerOpen && !now.Before(b.openUntil) {
		return b.setState(BreakerHalfOpen, now)
	}
	return nil
}

func run(f func()) {
	if f != nil {
		f()
	}
}

// Allow asks to make a call. It returns nil when the call may proceed (in
// half-open state only the first caller gets through, as the probe), or a
// *CircuitOpenError (matching ErrCircuitOpen) and counts a rejection.
// Every allowed call must be followed by Success or Failure.
func (b *CircuitBreaker) Allow() error {
	ok, retry, st, cb := b.acquire(true)
	run(cb)
	if ok {
		return nil
	}
	return &CircuitOpenError{RetryAfter: retry, State: st}
}

// acquire is Allow without allocating; count says whether a refusal counts
// as a rejection.
func (b *CircuitBreaker) acquire(count bool) (ok bool, retryAfter time.Duration, st BreakerState, cb func()) {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	cb = b.advance(now)
	switch b.state {
	case BreakerClosed:
		return true, 0, b.state, cb
	case BreakerHalfOpen:
		if !b.probeTaken {
			b.probeTaken = true
			return true, 0, b.state, cb
		}
		if count {
			b.rejections++
		}
		return false, 0, b.state, cb
	default:
		if count {
			b.rejections++
		}
		return false, b.openUntil.Sub(now), b.state, cb
	}
}

// check reports (counting a rejection) whether the breaker is open, without
// taking the half-open probe: calls that only queue work use it.
func (b *CircuitBreaker) check() error {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	cb := b.advance(now)
	var err error
	if b.state == BreakerOpen {
		b.rejections++
		err = &CircuitOpenError{RetryAfter: b.openUntil.Sub(now), State: b.state}
	}
	b.mu.Unlock()
	run(cb)
	return err
}

// Success records a successful call: it closes a half-open breaker and resets
// the consecutive failure count.
func (b *CircuitBreaker) Success() {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	b.successes++
	b.consecutive = 0
	var cb func()
	if b.state != BreakerClosed {
		cb = b.setState(BreakerClosed, now)
	}
	b.mu.Unlock()
	run(cb)
}

// Failure records a failed call: it opens the breaker once the consecutive
// failures reach the threshold, and reopens a half-open breaker for longer.
func (b *CircuitBreaker) Failure() {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	b.failures++
	b.consecutive++
	var cb func()
	switch b.state {
	case BreakerClosed:
		if b.consecutive >= b.cfg.FailureThreshold {
			cb = b.setState(BreakerOpen, now)
		}
	case BreakerHalfOpen:
		cb = b.setState(BreakerOpen, now)
	case BreakerOpen:
		// A late failure of a call allowed before opening: extend the open time.
		b.openUntil = now.Add(b.openTimeout(b.consecutive))
	}
	b.mu.Unlock()
	run(cb)
}

// State returns the current state (an open breaker whose time has passed
// reports half-open).
func (b *CircuitBreaker) State() BreakerState {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	cb := b.advance(now)
	st := b.state
	b.mu.Unlock()
	run(cb)
	return st
}

// readyAt returns when the breaker may next let a call through: the zero time
// when it does now, openUntil when open, and far in the future when a
// half-open probe is already out (the caller waits for the probe's outcome).
func (b *CircuitBreaker) readyAt() (time.Time, bool) {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	cb := b.advance(now)
	var t time.Time
	probeOut := false
	switch b.state {
	case BreakerOpen:
		t = b.openUntil
	case BreakerHalfOpen:
		probeOut = b.probeTaken
	}
	b.mu.Unlock()
	run(cb)
	return t, probeOut
}

// release gives back a half-open probe that was not used.
func (b *CircuitBreaker) release() {
	b.mu.Lock()
	if b.state == BreakerHalfOpen {
		b.probeTaken = false
	}
	b.mu.Unlock()
}

// Reset closes the breaker and clears the consecutive failure count.
func (b *CircuitBreaker) Reset() {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	b.consecutive = 0
	cb := b.setState(BreakerClosed, now)
	b.mu.Unlock()
	run(cb)
}

// Stats returns a snapshot of the breaker's state and counters.
func (b *CircuitBreaker) Stats() BreakerStats {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	cb := b.advance(now)
	s := BreakerStats{
		State:               b.state,
		ConsecutiveFailures: b.consecutive,
		Failures:            b.failures,
		Successes:           b.successes,
		Rejections:          b.rejections,
		Opens:               b.opens,
		LastStateChange:     b.lastChange,
		OpenUntil:           b.openUntil,
	}
	b.mu.Unlock()
	run(cb)
	return s
}
