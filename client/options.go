package client

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Mode selects how batches travel on the stream.
type Mode int

// Batch modes.
const (
	// ModeBinary sends each batch as a binary_batch: one cdc_batch frame of
	// the binary codec (the default, the server's fast path).
	ModeBinary Mode = iota
	// ModeStructured sends each batch as a structured protobuf Batch.
	ModeStructured
)

// String returns "binary" or "structured".
func (m Mode) String() string {
	if m == ModeStructured {
		return "structured"
	}
	return "binary"
}

// Defaults of the original DEFAULT_CHILD_CONFIG.
const (
	// DefaultMaxBatchEntries is the number of entries that completes a batch.
	DefaultMaxBatchEntries = 1000
	// DefaultMaxBatchBytes is the encoded size that completes a batch.
	DefaultMaxBatchBytes = 4 << 20
	// DefaultBatchTimeout is how long a started batch waits for more entries.
	DefaultBatchTimeout = time.Second
	// DefaultMaxRetries is the number of resends after failures.
	DefaultMaxRetries = 3
	// DefaultRetryDelay is the delay before the first resend.
	DefaultRetryDelay = 100 * time.Millisecond
	// DefaultRetryMultiplier multiplies the delay after each failure.
	DefaultRetryMultiplier = 2.0
	// DefaultMaxRetryDelay caps resend and reconnect delays.
	DefaultMaxRetryDelay = 10 * time.Second
	// DefaultAckTimeout is how long an ack may take.
	DefaultAckTimeout = 30 * time.Second
	// DefaultReconnectDelay is the delay before the first reconnect attempt.
	DefaultReconnectDelay = time.Second
	// DefaultMaxReconnectAttempts is the number of consecutive failed
	// reconnect attempts after which the client fails.
	DefaultMaxReconnectAttempts = 10
	// DefaultHeartbeatInterval is the heartbeat interval.
	DefaultHeartbeatInterval = 30 * time.Second
	// DefaultMaxRedirects bounds the redirects to the source's owner
	// followed in a row without a Connected (redirect.go).
	DefaultMaxRedirects = 3
	// DefaultMaxPendingBatches bounds the batches held until acknowledged.
	DefaultMaxPendingBatches = 100

	// DefaultKeepaliveTime is how long the connection may be silent before
	// the client pings the server: above lakehouse serve's default
	// keepalive enforcement minimum (--grpc-keepalive-min-time, 10 s), so
	// the server never sees the pings as abuse.
	DefaultKeepaliveTime = 30 * time.Second
	// DefaultKeepaliveTimeout is how long a keepalive ping may go
	// unanswered before the connection is closed as half-open (its streams
	// fail and the client reconnects on a new connection).
	DefaultKeepaliveTimeout = 10 * time.Second
	// MinKeepaliveTime is the shortest keepalive time: gRPC's minimum
	// client ping interval (shorter ones are raised to it).
	MinKeepaliveTime = 10 * time.Second

	// DefaultDeliveryTimeout is the delivery timeout: 0, none (a batch is
	// given up on only after its retries or by Close).
	DefaultDeliveryTimeout time.Duration = 0
)

// Limits of the options.
const (
	// MaxBatchBytesLimit is the largest WithMaxBatchBytes: the protocol's
	// 16 MiB message limit less room for the frame header, the source id and
	// the correlation id.
	MaxBatchBytesLimit = codec.MaxMessageSize - 128<<10
	// maxBatchEntriesLimit is the largest WithMaxBatchEntries (the
	// capability field is 32 bits).
	maxBatchEntriesLimit = math.MaxUint32
)

type config struct {
	maxBatchEntries      int
	maxBatchBytes        int
	batchTimeout         time.Duration
	maxRetries           int
	retryDelay           time.Duration
	retryMultiplier      float64
	maxRetryDelay        time.Duration
	ackTimeout           time.Duration
	deliveryTimeout      time.Duration
	reconnectDelay       time.Duration
	maxReconnectAttempts int
	maxRedirects         int
	heartbeatInterval    time.Duration
	maxPending           int
	shardName            string
	waitPersisted        bool
	mode                 Mode
	logger               *slog.Logger
	clock                Clock
	breaker              BreakerConfig
	dialOptions          []grpc.DialOption
	keepaliveTime        time.Duration
	keepaliveTimeout     time.Duration
	token                string

	onStateChange func(StateChange)
	onAck         func(Ack)
	onNack        func(Nack)
	onPersisted   func(Persisted)
	onError       func(error)
}

func defaultConfig() config {
	return config{
		maxBatchEntries:      DefaultMaxBatchEntries,
		maxBatchBytes:        DefaultMaxBatchBytes,
		batchTimeout:         DefaultBatchTimeout,
		maxRetries:           DefaultMaxRetries,
		retryDelay:           DefaultRetryDelay,
		retryMultiplier:      DefaultRetryMultiplier,
		maxRetryDelay:        DefaultMaxRetryDelay,
		ackTimeout:           DefaultAckTimeout,
		deliveryTimeout:      DefaultDeliveryTimeout,
		reconnectDelay:       DefaultReconnectDelay,
		maxReconnectAttempts: DefaultMaxReconnectAttempts,
		maxRedirects:         DefaultMaxRedirects,
		heartbeatInterval:    DefaultHeartbeatInterval,
		maxPending:           DefaultMaxPendingBatches,
		mode:                 ModeBinary,
		keepaliveTime:        DefaultKeepaliveTime,
		keepaliveTimeout:     DefaultKeepaliveTimeout,
	}
}

// newConfig applies opts to the defaults and validates the result.
func newConfig(opts []Option) (config, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return config{}, err
	}
	if err := validateToken(cfg.token); err != nil {
		return config{}, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.clock == nil {
		cfg.clock = SystemClock()
	}
	if cfg.breaker.Clock == nil {
		cfg.breaker.Clock = cfg.clock
	}
	return cfg, nil
}

// validate returns an error naming the first option whose value is out of
// range.
func (c *config) validate() error {
	type check struct {
		ok     bool
		option string
		value  any
		want   string
	}
	for _, k := range []check{
		{c.maxBatchEntries >= 1 && c.maxBatchEntries <= maxBatchEntriesLimit, "WithMaxBatchEntries", c.maxBatchEntries, fmt.Sprintf("1 to %d", maxBatchEntriesLimit)},
		{c.maxBatchBytes >= 1 && c.maxBatchBytes <= MaxBatchBytesLimit, "WithMaxBatchBytes", c.maxBatchBytes, fmt.Sprintf("1 to %d", MaxBatchBytesLimit)},
		{c.batchTimeout > 0, "WithBatchTimeout", c.batchTimeout, "> 0"},
		{c.maxRetries >= 0, "WithMaxRetries", c.maxRetries, ">= 0"},
		{c.retryDelay > 0, "WithRetryBackoff (initial)", c.retryDelay, "> 0"},
		{c.retryMultiplier >= 1 && !math.IsInf(c.retryMultiplier, 0), "WithRetryBackoff (multiplier)", c.retryMultiplier, ">= 1 and finite"},
		{c.maxRetryDelay >= c.retryDelay, "WithRetryBackoff (maxDelay)", c.maxRetryDelay, fmt.Sprintf(">= the initial delay %s", c.retryDelay)},
		{c.ackTimeout > 0, "WithAckTimeout", c.ackTimeout, "> 0"},
		{c.deliveryTimeout >= 0, "WithDeliveryTimeout", c.deliveryTimeout, ">= 0 (0: none)"},
		{c.maxReconnectAttempts >= 0, "WithReconnect (maxAttempts)", c.maxReconnectAttempts, ">= 0 (0: no reconnection)"},
		{c.reconnectDelay > 0 || c.maxReconnectAttempts == 0, "WithReconnect (delay)", c.reconnectDelay, "> 0"},
		{c.maxRedirects >= 0, "WithMaxRedirects", c.maxRedirects, ">= 0 (0: do not follow redirects)"},
		{c.heartbeatInterval >= 0, "WithHeartbeatInterval", c.heartbeatInterval, ">= 0 (0: no heartbeats)"},
		{c.maxPending >= 1, "WithMaxPendingBatches", c.maxPending, ">= 1"},
		{c.mode == ModeBinary || c.mode == ModeStructured, "WithMode", int(c.mode), "ModeBinary or ModeStructured"},
		{c.breaker.FailureThreshold >= 0, "WithBreaker (FailureThreshold)", c.breaker.FailureThreshold, ">= 0 (0: default 5)"},
		{c.breaker.OpenTimeout >= 0, "WithBreaker (OpenTimeout)", c.breaker.OpenTimeout, ">= 0 (0: default 1s)"},
		{c.breaker.MaxOpenTimeout >= 0, "WithBreaker (MaxOpenTimeout)", c.breaker.MaxOpenTimeout, ">= 0 (0: default 30s)"},
		{c.keepaliveTime == 0 || c.keepaliveTime >= MinKeepaliveTime, "WithKeepalive (time)", c.keepaliveTime, fmt.Sprintf("0 (off) or >= %s", MinKeepaliveTime)},
		{c.keepaliveTimeout > 0 || c.keepaliveTime == 0, "WithKeepalive (timeout)", c.keepaliveTimeout, "> 0"},
		{len(c.shardName) <= 0xFFFF, "WithShardName", fmt.Sprintf("%d bytes", len(c.shardName)), "at most 65535 bytes"},
	} {
		if !k.ok {
			return fmt.Errorf("%w: %s: %v is out of range (want %s)", ErrInvalidOption, k.option, k.value, k.want)
		}
	}
	return nil
}

// Option configures a Client. Values out of range make Dial and New fail
// with an error matching ErrInvalidOption that names the option.
type Option func(*config)

// WithMaxBatchEntries sets the number of entries that completes a batch
// (default 1,000; at least 1).
func WithMaxBatchEntries(n int) Option {
	return func(c *config) { c.maxBatchEntries = n }
}

// WithMaxBatchBytes sets the encoded size that completes a batch (default
// 4 MiB; 1 to MaxBatchBytesLimit).
func WithMaxBatchBytes(n int) Option {
	return func(c *config) { c.maxBatchBytes = n }
}

// WithBatchTimeout sets how long a started batch waits for more entries
// before it is sent (default 1 s; more than 0).
func WithBatchTimeout(d time.Duration) Option {
	return func(c *config) { c.batchTimeout = d }
}

// WithMaxRetries sets how many times a batch is resent after failures
// (INTERNAL_ERROR nacks, ack timeouts) before the client gives up on it and
// reports a *BatchError (default 3; 0 or more). Backpressure nacks
// (BUFFER_FULL, RATE_LIMITED) and reconnects do not count; bound them with
// WithDeliveryTimeout.
func WithMaxRetries(n int) Option {
	return func(c *config) { c.maxRetries = n }
}

// WithRetryBackoff sets the delay before the first resend, its multiplier and
// its cap (default 100 ms, x2, 10 s; initial more than 0, multiplier at least
// 1, cap at least initial). The cap also bounds reconnect delays and the
// backoff after backpressure nacks without a retry delay.
func WithRetryBackoff(initial time.Duration, multiplier float64, maxDelay time.Duration) Option {
	return func(c *config) {
		c.retryDelay = initial
		c.retryMultiplier = multiplier
		c.maxRetryDelay = maxDelay
	}
}

// WithAckTimeout sets how long the client waits for the ack of a batch (and
// for Connected after connecting) before it treats the stream as broken,
// reconnects and resends (default 30 s; more than 0).
func WithAckTimeout(d time.Duration) Option {
	return func(c *config) { c.ackTimeout = d }
}

// WithDeliveryTimeout bounds the time from sealing a batch to its ack: a
// batch still waiting to be (re)sent after d is given up on and reported as
// a *BatchError matching ErrDeliveryTimeout, whatever kept it (backpressure
// nacks, retries, reconnects). A batch in flight is given up on only after
// its answer or its ack timeout, so the bound is d plus the ack timeout.
// Default 0: no delivery timeout.
func WithDeliveryTimeout(d time.Duration) Option {
	return func(c *config) { c.deliveryTimeout = d }
}

// WithReconnect sets the delay before the first reconnect attempt (doubling
// up to the retry cap) and the number of consecutive failed attempts after
// which the client fails (default 1 s, 10 attempts). maxAttempts 0 disables
// automatic reconnection: the first stream failure is then final (and delay
// is not used).
func WithReconnect(delay time.Duration, maxAttempts int) Option {
	return func(c *config) {
		c.reconnectDelay = delay
		c.maxReconnectAttempts = maxAttempts
	}
}

// WithMaxRedirects sets how many redirects to the source's owner (multi-
// instance servers, docs/scale-out.md) a client made with Dial follows in a
// row before a connect counts as failed (default 3; 0: never follow, a
// redirect is then an Unavailable connect). Clients made with New never
// follow redirects: they do not own their connection.
func WithMaxRedirects(n int) Option {
	return func(c *config) { c.maxRedirects = n }
}

// WithHeartbeatInterval sets the heartbeat interval (default 30 s; 0
// disables heartbeats).
func WithHeartbeatInterval(d time.Duration) Option {
	return func(c *config) { c.heartbeatInterval = d }
}

// WithMaxPendingBatches bounds the batches held until acknowledged (default
// 100; at least 1); Send blocks while the bound is reached.
func WithMaxPendingBatches(n int) Option {
	return func(c *config) { c.maxPending = n }
}

// WithShardName sets the shard name sent on connect and stored with every row.
func WithShardName(name string) Option {
	return func(c *config) { c.shardName = name }
}

// WithWaitForPersisted keeps every batch until the server reports it
// committed to Iceberg (a Persisted watermark), not just acknowledged; Close
// then asks the server to flush and waits for the watermark.
func WithWaitForPersisted(on bool) Option {
	return func(c *config) { c.waitPersisted = on }
}

// WithMode selects binary (default) or structured batches.
func WithMode(m Mode) Option {
	return func(c *config) { c.mode = m }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithClock sets the clock of every time reading and timer of the client and
// its circuit breaker, batch timestamps and heartbeat timestamps included
// (default SystemClock(); nil means the default).
func WithClock(clk Clock) Option {
	return func(c *config) { c.clock = clk }
}

// WithBreaker configures the circuit breaker (its Clock defaults to the
// client's clock; zero fields take the defaults, negative ones are invalid).
func WithBreaker(cfg BreakerConfig) Option {
	return func(c *config) { c.breaker = cfg }
}

// WithDialOptions adds gRPC dial options used by Dial (default: insecure
// transport credentials, as the server listens on loopback by default).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// WithKeepalive sets the keepalive of the connection Dial makes: after
// time without anything received the client pings the server, and closes
// the connection when the ping is not answered within timeout, so a
// half-open connection (a stalled link, a paused or vanished server) is
// replaced rather than waited on forever: its streams fail, and the client
// reconnects and resends. Default 30 s and 10 s; time 0 turns keepalives
// off, otherwise it must be at least MinKeepaliveTime (gRPC raises shorter
// ones) and should not be below the server's enforcement minimum (lakehouse
// serve --grpc-keepalive-min-time, 10 s by default); timeout
// more than 0. Connections given to New keep their own settings.
func WithKeepalive(time, timeout time.Duration) Option {
	return func(c *config) { c.keepaliveTime, c.keepaliveTimeout = time, timeout }
}

// OnStateChange sets a callback run after every connection state change.
// Callbacks run on the client's goroutines: they must not block for long; a
// panic in a callback is recovered and logged.
func OnStateChange(f func(StateChange)) Option {
	return func(c *config) { c.onStateChange = f }
}

// OnAck sets a callback run for every acknowledged batch.
func OnAck(f func(Ack)) Option {
	return func(c *config) { c.onAck = f }
}

// OnNack sets a callback run for every nack received.
func OnNack(f func(Nack)) Option {
	return func(c *config) { c.onNack = f }
}

// OnPersisted sets a callback run for every Persisted watermark received.
func OnPersisted(f func(Persisted)) Option {
	return func(c *config) { c.onPersisted = f }
}

// OnError sets a callback run for every error the client reports
// asynchronously: each given-up batch as a *BatchError, and the terminal
// failure of the client.
func OnError(f func(error)) Option {
	return func(c *config) { c.onError = f }
}
