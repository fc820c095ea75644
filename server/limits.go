package server

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// MaxGRPCMessageSize is the gRPC message limit for batches: twice the
// protocol's largest batch (codec.MaxMessageSize), so that batches up to twice
// too large reach accept and get a clean invalid_format nack on a stream that
// stays up. A larger message ends its stream with RESOURCE_EXHAUSTED, because
// gRPC cannot skip a message it refused to read; the limit also bounds what
// one message makes the server allocate. Clients that forward batches (the
// bridge) use it as their send limit (GRPCCallLimits), so the server, not
// their transport, judges a batch's size.
const MaxGRPCMessageSize = 2 * codec.MaxMessageSize

// GRPCCallLimits is the dial option of clients that forward batches to a
// server (the WebSocket bridge, tests): send and receive limits of
// MaxGRPCMessageSize.
func GRPCCallLimits() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxGRPCMessageSize), grpc.MaxCallSendMsgSize(MaxGRPCMessageSize))
}

// GRPCOptions returns the options the grpc.Server that hosts s must have: its
// receive limit (twice Config.MaxMessageSize, see MaxGRPCMessageSize), the
// stream caps of Config.Limits and its receive buffers (recvBufferPool,
// recvCodec). Add transport options such as keepalive to them.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	pool := &recvBufferPool{}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(2 * s.cfg.MaxMessageSize),
		grpc.ChainStreamInterceptor(s.streams.intercept),
		experimental.BufferPool(pool),
		grpc.ForceServerCodecV2(newRecvCodec(pool)),
	}
}

// Defaults of Limits (and of lakehouse serve's flags).
const (
	// DefaultMaxBatchEntries bounds the entries of one batch. Decoding a
	// batch costs about 120 bytes per entry beyond its frame, so the bound
	// keeps what one stream's batch makes the server allocate near the
	// frame's own size. Clients batch 1,000 entries by default.
	DefaultMaxBatchEntries = 100_000
	// DefaultMaxStreams caps concurrent gRPC streams (lakehouse serve).
	DefaultMaxStreams = 10_000
	// DefaultMinManualFlushInterval spaces manual commits (lakehouse serve).
	DefaultMinManualFlushInterval = time.Second
)

// Limits bound what clients can make the server do. The zero value has no
// caps except MaxBatchEntries (DefaultMaxBatchEntries); lakehouse serve sets
// the defaults of docs/limits.md.
type Limits struct {
	// MaxBatchEntries bounds the entries of a batch; a larger batch is
	// nacked invalid_format. Default DefaultMaxBatchEntries.
	MaxBatchEntries int
	// SourceRateEntries and SourceRateBytes limit each source to this many
	// entries and frame bytes per second, averaged by token buckets that
	// hold one second of the rate. A batch beyond the rate is nacked
	// rate_limited with the delay after which it will be accepted (see
	// ratelimit.go). 0: no limit.
	SourceRateEntries float64
	SourceRateBytes   float64
	// SourceRate, when set, returns a stream's own limit for its source
	// from the stream's context (a token's rate limit), in entries/s and
	// bytes/s. When it returns a non-zero value the stream is limited by
	// that instead of SourceRateEntries/Bytes (0 in a dimension: none).
	SourceRate func(ctx context.Context) (entriesPerSec, bytesPerSec float64)
	// MinManualFlushInterval spaces commits requested by clients (Flush,
	// stream flush, HTTP /flush): at most one starts per interval; requests
	// in between share the next one. 0: no spacing.
	MinManualFlushInterval time.Duration
	// MaxStreams caps concurrent gRPC streams of the server (CDC streams,
	// health watches, reflection); more get RESOURCE_EXHAUSTED. 0: no cap.
	MaxStreams int
	// MaxStreamsPerKey caps the concurrent streams that share one
	// StreamKey (a token's principal); 0: no cap.
	MaxStreamsPerKey int
	// StreamKey returns the key a stream counts under for
	// MaxStreamsPerKey, from the stream's context (for example the
	// principal of its token). "" is not capped. Nil: no per-key cap.
	StreamKey func(ctx context.Context) string
}

func (l *Limits) setDefaults() error {
	if l.MaxBatchEntries == 0 {
		l.MaxBatchEntries = DefaultMaxBatchEntries
	}
	checks := []struct {
		ok    bool
		field string
		v     any
	}{
		{l.MaxBatchEntries > 0 && l.MaxBatchEntries <= math.MaxUint32, "MaxBatchEntries", l.MaxBatchEntries},
		{l.SourceRateEntries >= 0 && !math.IsInf(l.SourceRateEntries, 0), "SourceRateEntries", l.SourceRateEntries},
		{l.SourceRateBytes >= 0 && !math.IsInf(l.SourceRateBytes, 0), "SourceRateBytes", l.SourceRateBytes},
		{l.MinManualFlushInterval >= 0, "MinManualFlushInterval", l.MinManualFlushInterval},
		{l.MaxStreams >= 0, "MaxStreams", l.MaxStreams},
		{l.MaxStreamsPerKey >= 0, "MaxStreamsPerKey", l.MaxStreamsPerKey},
	}
	for _, c := range checks {
		if !c.ok { // NaN fails every comparison, so it lands here too
			return fmt.Errorf("server: Config.Limits.%s %v is out of range (want a non-negative, finite value)", c.field, c.v)
		}
	}
	return nil
}

// tooManyEntries is the nack message of a batch over MaxBatchEntries.
func (l *Limits) tooManyEntries(n uint32) string {
	return fmt.Sprintf("batch has %d entries, more than the limit of %d (max-batch-entries)", n, l.MaxBatchEntries)
}

// streamCaps counts concurrent streams, in total and per key.
type streamCaps struct {
	max, maxPerKey int
	key            func(context.Context) string
	refused        *prometheus.CounterVec // by limit: total, per_key

	mu    sync.Mutex
	total int
	byKey map[string]int
}

func newStreamCaps(l Limits, reg prometheus.Registerer) *streamCaps {
	c := &streamCaps{max: l.MaxStreams, maxPerKey: l.MaxStreamsPerKey, key: l.StreamKey, byKey: make(map[string]int),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lakehouse_streams_refused_total", Help: "gRPC streams refused with RESOURCE_EXHAUSTED by a stream cap, by limit (total, per_key).",
		}, []string{"limit"})}
	if reg != nil {
		reg.MustRegister(c.refused)
	}
	return c
}

// intercept is the grpc.StreamServerInterceptor that enforces the caps.
func (c *streamCaps) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	release, err := c.acquire(ss.Context())
	if err != nil {
		return err
	}
	defer release()
	return handler(srv, ss)
}

// acquire counts a stream, or refuses it over a cap.
func (c *streamCaps) acquire(ctx context.Context) (release func(), err error) {
	key := ""
	if c.key != nil && c.maxPerKey > 0 {
		key = c.key(ctx)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.total >= c.max {
		c.refused.WithLabelValues("total").Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"too many concurrent streams: the server's limit of %d (max-streams) is reached; retry later", c.max)
	}
	if key != "" && c.byKey[key] >= c.maxPerKey {
		c.refused.WithLabelValues("per_key").Inc()
		// The key (a principal's name) is not echoed: it may be a secret's
		// derivative, and the client knows who it is.
		return nil, status.Errorf(codes.ResourceExhausted,
			"too many concurrent streams for this token: its limit of %d (max-streams-per-token) is reached; retry later", c.maxPerKey)
	}
	c.total++
	if key != "" {
		c.byKey[key]++
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.total--
		if key != "" {
			if c.byKey[key]--; c.byKey[key] <= 0 {
				delete(c.byKey, key)
			}
		}
	}, nil
}
