package client

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"
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
	// DefaultMaxPendingBatches bounds the batches held until acknowledged.
	DefaultMaxPendingBatches = 100
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
	reconnectDelay       time.Duration
	maxReconnectAttempts int
	heartbeatInterval    time.Duration
	maxPending           int
	shardName            string
	waitPersisted        bool
	mode                 Mode
	logger               *slog.Logger
	clock                Clock
	breaker              BreakerConfig
	dialOptions          []grpc.DialOption

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
		reconnectDelay:       DefaultReconnectDelay,
		maxReconnectAttempts: DefaultMaxReconnectAttempts,
		heartbeatInterval:    DefaultHeartbeatInterval,
		maxPending:           DefaultMaxPendingBatches,
		mode:                 ModeBinary,
	}
}

// newConfig applies opts to the defaults.
func newConfig(opts []Option) (config, error) {
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
	if cfg.breaker.Clock == nil {
		cfg.breaker.Clock = cfg.clock
	}
	return cfg, nil
}

// Option configures a Client.
type Option func(*config)

// WithMaxBatchEntries sets the number of entries that completes a batch
// (default 1,000).
func WithMaxBatchEntries(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBatchEntries = n
		}
	}
}

// WithMaxBatchBytes sets the encoded size that completes a batch (default
// 4 MiB).
func WithMaxBatchBytes(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBatchBytes = n
		}
	}
}

// WithBatchTimeout sets how long a started batch waits for more entries
// before it is sent (default 1 s).
func WithBatchTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.batchTimeout = d
		}
	}
}

// WithMaxRetries sets how many times a batch is resent after failures
// (INTERNAL_ERROR nacks, ack timeouts) before the client gives up on it and
// reports a *BatchError (default 3). Backpressure nacks (BUFFER_FULL,
// RATE_LIMITED) and reconnects do not count.
func WithMaxRetries(n int) Option {
	return func(c *config) {
		if n >= 0 {
			c.maxRetries = n
		}
	}
}

// WithRetryBackoff sets the delay before the first resend, its multiplier and
// its cap (default 100 ms, x2, 10 s). The cap also bounds reconnect delays.
func WithRetryBackoff(initial time.Duration, multiplier float64, maxDelay time.Duration) Option {
	return func(c *config) {
		if initial > 0 {
			c.retryDelay = initial
		}
		if multiplier >= 1 {
			c.retryMultiplier = multiplier
		}
		if maxDelay > 0 {
			c.maxRetryDelay = maxDelay
		}
	}
}

// WithAckTimeout sets how long the client waits for the ack of a batch (and
// for Connected after connecting) before it treats the stream as broken,
// reconnects and resends (default 30 s).
func WithAckTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.ackTimeout = d
		}
	}
}

// WithReconnect sets the delay before the first reconnect attempt (doubling
// up to the retry cap) and the number of consecutive failed attempts after
// which the client fails (default 1 s, 10 attempts). maxAttempts 0 disables
// automatic reconnection: the first stream failure is then final.
func WithReconnect(delay time.Duration, maxAttempts int) Option {
	return func(c *config) {
		if delay > 0 {
			c.reconnectDelay = delay
		}
		if maxAttempts >= 0 {
			c.maxReconnectAttempts = maxAttempts
		}
	}
}

// WithHeartbeatInterval sets the heartbeat interval (default 30 s; 0 or less
// disables heartbeats).
func WithHeartbeatInterval(d time.Duration) Option {
	return func(c *config) { c.heartbeatInterval = d }
}

// WithMaxPendingBatches bounds the batches held until acknowledged (default
// 100); Send blocks while the bound is reached.
func WithMaxPendingBatches(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxPending = n
		}
	}
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

// WithClock sets the clock used by timers and the circuit breaker (default
// SystemClock()).
func WithClock(clk Clock) Option {
	return func(c *config) { c.clock = clk }
}

// WithBreaker configures the circuit breaker (its Clock defaults to the
// client's clock).
func WithBreaker(cfg BreakerConfig) Option {
	return func(c *config) { c.breaker = cfg }
}

// WithDialOptions adds gRPC dial options used by Dial (default: insecure
// transport credentials, as the server listens on loopback by default).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
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
