package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/wsbridge"
)

// Limits of lakehouse serve: each a flag (Key, also its YAML key and, as
// LAKEHOUSE_<KEY>, its environment variable) with its Default. docs/limits.md
// is generated from limitDocs and these flags.
const (
	maxMessageBytesKey     = "max-message-bytes"
	maxMessageBytesDefault = codec.MaxMessageSize

	maxBatchEntriesKey     = "max-batch-entries"
	maxBatchEntriesDefault = server.DefaultMaxBatchEntries

	sourceRateEntriesKey     = "source-rate-entries"
	sourceRateEntriesDefault = 0.0
	sourceRateBytesKey       = "source-rate-bytes"
	sourceRateBytesDefault   = 0.0

	minManualFlushIntervalKey     = "min-manual-flush-interval"
	minManualFlushIntervalDefault = server.DefaultMinManualFlushInterval

	maxStreamsKey             = "max-streams"
	maxStreamsDefault         = server.DefaultMaxStreams
	maxStreamsPerTokenKey     = "max-streams-per-token"
	maxStreamsPerTokenDefault = 0

	maxWSConnsKey            = "max-ws-conns"
	maxWSConnsDefault        = 10_000
	maxWSConnsPerAddrKey     = "max-ws-conns-per-addr"
	maxWSConnsPerAddrDefault = 0

	httpReadHeaderTimeoutKey     = "http-read-header-timeout"
	httpReadHeaderTimeoutDefault = 10 * time.Second
	httpIdleTimeoutKey           = "http-idle-timeout"
	httpIdleTimeoutDefault       = 2 * time.Minute
	httpWriteTimeoutKey          = "http-write-timeout"
	httpWriteTimeoutDefault      = 3 * time.Minute // above the bridge's 2 min RPC timeout, so /flush answers

	grpcKeepaliveMinTimeKey     = "grpc-keepalive-min-time"
	grpcKeepaliveMinTimeDefault = 10 * time.Second
	grpcKeepaliveTimeKey        = "grpc-keepalive-time"
	grpcKeepaliveTimeDefault    = 30 * time.Second
	grpcKeepaliveTimeoutKey     = "grpc-keepalive-timeout"
	grpcKeepaliveTimeoutDefault = 10 * time.Second
	// Keepalives start only after the handshake, and gRPC's own default
	// (120 s) is longer than the shutdown timeout: a connection that went
	// silent before its handshake (a blackholed link) held a stop for that
	// long, since gRPC's Stop waits for handshakes in progress.
	grpcHandshakeTimeoutKey     = "grpc-handshake-timeout"
	grpcHandshakeTimeoutDefault = 10 * time.Second
)

// limitDocs says, for docs/limits.md, what each limit applies to and what a
// client sees beyond it, in the order of the table.
var limitDocs = []struct{ key, scope, beyond string }{
	{maxMessageBytesKey, "one batch frame (gRPC and WebSocket); a structured batch counts as the frame it encodes to",
		"nack `invalid_format` naming the limit; the stream stays up. The server's gRPC receive limit is twice this: a larger message ends its stream with `RESOURCE_EXHAUSTED`"},
	{maxBatchEntriesKey, "entries of one batch", "nack `invalid_format` naming `max-batch-entries`, before the batch is decoded"},
	{sourceRateEntriesKey, "entries per second of each source (token bucket holding one second of the rate)",
		"nack `rate_limited` with `retry_delay_ms`: the batch is not sequenced or stored; resent after the delay it is accepted"},
	{sourceRateBytesKey, "batch frame bytes per second of each source", "as `source-rate-entries`"},
	{minManualFlushIntervalKey, "commits requested by clients (Flush RPC, stream flush, HTTP `/flush`)",
		"no error: the request waits for and shares the next commit, at most one per interval"},
	{maxStreamsKey, "concurrent gRPC streams (CDC streams, including the WebSocket bridge's; health watches; reflection)",
		"the new stream ends with `RESOURCE_EXHAUSTED`; clients reconnect with backoff"},
	{maxStreamsPerTokenKey, "concurrent gRPC streams of one token (when tokens are configured)", "as `max-streams`"},
	{maxWSConnsKey, "concurrent WebSocket connections of the legacy bridge", "the upgrade gets HTTP 503 with `Retry-After` and a message naming the limit"},
	{maxWSConnsPerAddrKey, "concurrent WebSocket connections from one remote IP address (off by default: Durable Object children share egress addresses)", "as `max-ws-conns`"},
	{httpReadHeaderTimeoutKey, "time to read a request's headers (slowloris)", "the connection is closed"},
	{httpIdleTimeoutKey, "idle keep-alive HTTP connections", "the connection is closed"},
	{httpWriteTimeoutKey, "time to write one HTTP response; WebSockets are exempt and `/debug/pprof/profile?seconds=N` gets N more", "the response is cut off"},
	{grpcKeepaliveMinTimeKey, "shortest interval between a client's keepalive pings", "the connection is closed with `ENHANCE_YOUR_CALM` (too_many_pings)"},
	{grpcKeepaliveTimeKey, "the server pings a connection idle this long", "—"},
	{grpcKeepaliveTimeoutKey, "wait for the answer to the server's ping", "the connection is closed, and its streams released"},
	{grpcHandshakeTimeoutKey, "time from accepting a gRPC connection to the end of its handshake (TLS and HTTP/2 settings)", "the connection is closed"},
}

// limitFlags are the values of the limit flags.
type limitFlags struct {
	maxMessageBytes        int
	maxBatchEntries        int
	sourceRateEntries      float64
	sourceRateBytes        float64
	minManualFlushInterval time.Duration
	maxStreams             int
	maxStreamsPerToken     int
	maxWSConns             int
	maxWSConnsPerAddr      int
	http                   httpTimeouts
	keepaliveMinTime       time.Duration
	keepaliveTime          time.Duration
	keepaliveTimeout       time.Duration
	handshakeTimeout       time.Duration
}

func (l *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&l.maxMessageBytes, maxMessageBytesKey, maxMessageBytesDefault, "largest batch frame accepted, in bytes (at most the protocol's 16 MiB); larger batches are nacked invalid_format")
	fs.IntVar(&l.maxBatchEntries, maxBatchEntriesKey, maxBatchEntriesDefault, "most entries in one batch; larger batches are nacked invalid_format")
	fs.Float64Var(&l.sourceRateEntries, sourceRateEntriesKey, sourceRateEntriesDefault, "per-source rate limit in entries/s; batches beyond it are nacked rate_limited with a retry delay (0: no limit)")
	fs.Float64Var(&l.sourceRateBytes, sourceRateBytesKey, sourceRateBytesDefault, "per-source rate limit in batch bytes/s; batches beyond it are nacked rate_limited with a retry delay (0: no limit)")
	fs.DurationVar(&l.minManualFlushInterval, minManualFlushIntervalKey, minManualFlushIntervalDefault, "at most one client-requested commit (Flush, stream flush, /flush) per interval; requests in between share the next one (0: no spacing)")
	fs.IntVar(&l.maxStreams, maxStreamsKey, maxStreamsDefault, "cap on concurrent gRPC streams; more get RESOURCE_EXHAUSTED (0: no cap)")
	fs.IntVar(&l.maxStreamsPerToken, maxStreamsPerTokenKey, maxStreamsPerTokenDefault, "cap on concurrent gRPC streams per token, when tokens are configured (0: no cap)")
	fs.IntVar(&l.maxWSConns, maxWSConnsKey, maxWSConnsDefault, "cap on concurrent WebSocket connections; more get HTTP 503 (0: no cap)")
	fs.IntVar(&l.maxWSConnsPerAddr, maxWSConnsPerAddrKey, maxWSConnsPerAddrDefault, "cap on concurrent WebSocket connections from one IP address; more get HTTP 503 (0: no cap)")
	l.http.register(fs)
	fs.DurationVar(&l.keepaliveMinTime, grpcKeepaliveMinTimeKey, grpcKeepaliveMinTimeDefault, "gRPC keepalive enforcement: clients pinging more often than this are disconnected")
	fs.DurationVar(&l.keepaliveTime, grpcKeepaliveTimeKey, grpcKeepaliveTimeDefault, "the server pings gRPC connections idle this long, so a vanished client's streams are released")
	fs.DurationVar(&l.keepaliveTimeout, grpcKeepaliveTimeoutKey, grpcKeepaliveTimeoutDefault, "how long the server waits for a keepalive ping's answer before closing the connection")
	fs.DurationVar(&l.handshakeTimeout, grpcHandshakeTimeoutKey, grpcHandshakeTimeoutDefault, "how long a new gRPC connection may take to complete its handshake (TLS, HTTP/2) before it is closed; a stop waits for handshakes in progress")
}

// validate checks every limit, naming the flag of a bad value.
func (l *limitFlags) validate() error {
	checks := []struct {
		ok   bool
		key  string
		v    any
		want string
	}{
		{l.maxMessageBytes >= 1024 && l.maxMessageBytes <= codec.MaxMessageSize, maxMessageBytesKey, l.maxMessageBytes, fmt.Sprintf("1024 to %d", codec.MaxMessageSize)},
		{l.maxBatchEntries >= 1 && l.maxBatchEntries <= math.MaxUint32, maxBatchEntriesKey, l.maxBatchEntries, "at least 1"},
		{l.sourceRateEntries >= 0 && !math.IsInf(l.sourceRateEntries, 0), sourceRateEntriesKey, l.sourceRateEntries, "0 (no limit) or a positive rate"},
		{l.sourceRateBytes >= 0 && !math.IsInf(l.sourceRateBytes, 0), sourceRateBytesKey, l.sourceRateBytes, "0 (no limit) or a positive rate"},
		{l.minManualFlushInterval >= 0, minManualFlushIntervalKey, l.minManualFlushInterval, "0 or more"},
		{l.maxStreams >= 0, maxStreamsKey, l.maxStreams, "0 (no cap) or more"},
		{l.maxStreamsPerToken >= 0, maxStreamsPerTokenKey, l.maxStreamsPerToken, "0 (no cap) or more"},
		{l.maxWSConns >= 0, maxWSConnsKey, l.maxWSConns, "0 (no cap) or more"},
		{l.maxWSConnsPerAddr >= 0, maxWSConnsPerAddrKey, l.maxWSConnsPerAddr, "0 (no cap) or more"},
		{l.keepaliveMinTime > 0, grpcKeepaliveMinTimeKey, l.keepaliveMinTime, "more than 0"},
		{l.keepaliveTime >= time.Second, grpcKeepaliveTimeKey, l.keepaliveTime, "1s or more"},
		{l.keepaliveTimeout > 0, grpcKeepaliveTimeoutKey, l.keepaliveTimeout, "more than 0"},
		{l.handshakeTimeout > 0, grpcHandshakeTimeoutKey, l.handshakeTimeout, "more than 0"},
	}
	for _, c := range checks {
		if !c.ok { // NaN fails every comparison
			return fmt.Errorf("--%s %v: want %s", c.key, c.v, c.want)
		}
	}
	return l.http.validate()
}

// applyServer sets the server's limits. With tokens, streams count per
// token for --max-streams-per-token, and a token's own rate limit replaces
// the --source-rate flags for the sources written under it.
func (l *limitFlags) applyServer(cfg *server.Config, tokens bool) {
	cfg.MaxMessageSize = l.maxMessageBytes
	cfg.Limits = server.Limits{
		MaxBatchEntries:        l.maxBatchEntries,
		SourceRateEntries:      l.sourceRateEntries,
		SourceRateBytes:        l.sourceRateBytes,
		MinManualFlushInterval: l.minManualFlushInterval,
		MaxStreams:             l.maxStreams,
		MaxStreamsPerKey:       l.maxStreamsPerToken,
	}
	if tokens {
		tokenLimits(&cfg.Limits)
	}
}

// tokenLimits makes streams count per token (MaxStreamsPerKey) and a token's
// own rate limit apply to the sources written under it.
func tokenLimits(l *server.Limits) {
	l.StreamKey = func(ctx context.Context) string {
		p, _ := auth.FromContext(ctx)
		return p.Name
	}
	l.SourceRate = func(ctx context.Context) (float64, float64) {
		p, _ := auth.FromContext(ctx)
		return p.EntriesPerSec, p.BytesPerSec
	}
}

// applyBridge sets the in-process WebSocket bridge's limits.
func (l *limitFlags) applyBridge(cfg *wsbridge.Config) {
	cfg.MaxMessageSize = int64(l.maxMessageBytes)
	cfg.MaxConnections = l.maxWSConns
	cfg.MaxConnectionsPerAddr = l.maxWSConnsPerAddr
}

// grpcOptions are the gRPC server's keepalive parameters and enforcement,
// and its handshake timeout.
func (l *limitFlags) grpcOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(l.handshakeTimeout),
		// Ping idle connections so a source whose host vanished (no FIN)
		// is noticed and its stream released.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: l.keepaliveTime, Timeout: l.keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.keepaliveMinTime, PermitWithoutStream: true}),
	}
}
