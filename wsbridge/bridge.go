// Package wsbridge serves legacy TypeScript children that speak the original
// WebSocket protocol (spec/legacy-protocol.md) and translates their frames to
// the CDCService gRPC API and back.
//
// The bridge is a gRPC client of CDCService: the same code runs in-process
// (the server hands it a grpc.ClientConnInterface to itself) and standalone
// (lakehouse bridge --upstream HOST:PORT).
//
// Per WebSocket connection the bridge keeps one goroutine, the one reading
// the socket. The upstream gRPC stream of a connection is opened by the JSON
// connect (or lazily by the first batch) and closed again after
// Config.UpstreamIdleTimeout without traffic, so an idle legacy child costs a
// socket, a small read and write buffer and a parked goroutine, and nothing
// upstream. cdc_batch frames are forwarded to the server untouched as
// binary_batch; the server's Ack and Nack become binary ack and nack frames
// carrying the batch's correlation id, which is all a legacy child matches on.
package wsbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
)

// Defaults of Config's zero fields.
const (
	// DefaultMaxMessageSize is the protocol's 16 MiB message limit.
	DefaultMaxMessageSize = codec.MaxMessageSize
	// DefaultUpstreamIdleTimeout is how long an unused upstream stream stays open.
	DefaultUpstreamIdleTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds a write to a WebSocket.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultConnectTimeout bounds opening an upstream stream.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultRPCTimeout bounds the unary Flush and GetStatus calls.
	DefaultRPCTimeout = 2 * time.Minute
	// DefaultRetryDelay is the retryDelayMs of nacks for upstream failures.
	DefaultRetryDelay = time.Second
	// DefaultPingInterval is how often the bridge pings each child.
	DefaultPingInterval = 30 * time.Second
	// DefaultPingTimeout is how long a ping may go unanswered.
	DefaultPingTimeout = 10 * time.Second
	// DefaultReadBufferSize is a connection's socket read buffer.
	DefaultReadBufferSize = 512
	// DefaultWriteBufferSize is a connection's socket write buffer.
	DefaultWriteBufferSize = 512
)

// Config configures a Bridge. Only Upstream is required.
type Config struct {
	// Upstream is the connection to the CDCService server (a *grpc.ClientConn,
	// or the server's own in-process connection). Required.
	Upstream grpc.ClientConnInterface
	// Logger receives the bridge's logs; nil discards them.
	Logger *slog.Logger
	// MaxMessageSize is the largest WebSocket message accepted, in bytes
	// (default 16 MiB). Larger messages are discarded as they arrive, never
	// buffered whole, and answered with a nack invalid_format.
	MaxMessageSize int64
	// IdleTimeout closes a WebSocket that sent nothing (not even a heartbeat)
	// for this long. 0 means never.
	IdleTimeout time.Duration
	// UpstreamIdleTimeout closes a connection's upstream gRPC stream after this
	// long without batches in flight or sent (default 30 s). The next batch
	// opens it again. Negative means never.
	UpstreamIdleTimeout time.Duration
	// WriteTimeout bounds each write to a WebSocket (default 10 s); a child that
	// does not read its acks is disconnected.
	WriteTimeout time.Duration
	// DialRedirect, when set, makes the bridge follow Redirect answers
	// (multi-instance servers, docs/scale-out.md) for legacy children, who
	// cannot: it returns a connection to the owner's address. Connections
	// are kept per address and closed by Close. Nil: a Redirect is an
	// upstream failure, as Unavailable.
	DialRedirect func(addr string) (*grpc.ClientConn, error)
	// MaxRedirects bounds the redirects followed for one upstream open
	// (default DefaultMaxRedirects).
	MaxRedirects int
	// ConnectTimeout bounds opening an upstream stream, Connected included
	// (default 10 s).
	ConnectTimeout time.Duration
	// RPCTimeout bounds the unary Flush and GetStatus calls (default 2 min).
	RPCTimeout time.Duration
	// RetryDelay is the retryDelayMs of the nacks sent when the upstream
	// stream breaks or cannot be opened (default 1 s).
	RetryDelay time.Duration
	// MaxConnections caps concurrent WebSocket connections; 0 means no cap.
	// Upgrades beyond the cap get 503.
	MaxConnections int
	// MaxConnectionsPerAddr caps concurrent WebSocket connections from one
	// remote IP address; 0 means no cap. Upgrades beyond it get 503.
	MaxConnectionsPerAddr int
	// OriginPatterns authorises cross-origin browser upgrades (see
	// websocket.AcceptOptions). Legacy children send no Origin header.
	OriginPatterns []string
	// PingInterval is how often each child is sent a WebSocket ping (default
	// 30 s; negative: never); PingTimeout is how long its pong may take
	// (default 10 s) before the connection is closed as half-open (see
	// ping.go).
	PingInterval time.Duration
	PingTimeout  time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's socket
	// buffers (default 512 bytes each: frames larger than the buffer are read
	// and written directly, so small buffers cost little speed and save memory
	// on idle connections).
	ReadBufferSize  int
	WriteBufferSize int
	// Token, when set, is the bridge's own bearer token (the secret, without
	// "Bearer "): a child that sends no token of its own is connected
	// upstream with it, but only as a source matching AllowSources (exact
	// ids or path.Match globs); other sources are refused (the WebSocket is
	// closed with a policy violation). A child's own token is always
	// forwarded as is. The HTTP /status and /flush endpoints never use it.
	Token        string
	AllowSources []string
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.UpstreamIdleTimeout == 0 {
		c.UpstreamIdleTimeout = DefaultUpstreamIdleTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxRedirects <= 0 {
		c.MaxRedirects = DefaultMaxRedirects
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = DefaultRPCTimeout
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = DefaultReadBufferSize
	}
	if c.WriteBufferSize <= 0 {
		c.WriteBufferSize = DefaultWriteBufferSize
	}
}

// Bridge serves legacy WebSocket children and HTTP endpoints. Create it with
// New; it is safe for concurrent use.
type Bridge struct {
	cfg    Config
	log    *slog.Logger
	client lakehousev1.CDCServiceClient

	ctx    context.Context // cancelled by Close: ends every connection and stream
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	caps   connCaps       // upgrades admitted, by remote address (caps.go)
	wg     sync.WaitGroup // connection, receiver and flush goroutines

	bufs sync.Pool // *[]byte read buffers

	upstreamDown atomic.Bool  // an outage is in progress (for logging)
	pingTimeouts atomic.Int64 // children closed for not answering a ping
	redirects    redirectConns

	statusMu sync.Mutex // single-flights GetStatus for connect replies
	statusAt time.Time
	status   *lakehousev1.ServerStatus
}

// statusCacheTTL is how long a GetStatus result answers connects: a storm of
// reconnecting children costs one GetStatus per second, not one each.
const statusCacheTTL = time.Second

// cachedStatus returns the server's status, at most statusCacheTTL old.
func (b *Bridge) cachedStatus(ctx context.Context) (*lakehousev1.ServerStatus, error) {
	b.statusMu.Lock()
	defer b.statusMu.Unlock()
	if b.status != nil && time.Since(b.statusAt) < statusCacheTTL {
		return b.status, nil
	}
	resp, err := b.client.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("upstream GetStatus: %w", err)
	}
	b.status, b.statusAt = resp.GetStatus(), time.Now()
	return b.status, nil
}

// New returns a Bridge forwarding to cfg.Upstream. It panics if cfg.Upstream
// is nil.
func New(cfg Config) *Bridge {
	if cfg.Upstream == nil {
		panic("wsbridge: Config.Upstream is nil")
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Bridge{
		cfg:    cfg,
		log:    cfg.Logger,
		client: lakehousev1.NewCDCServiceClient(cfg.Upstream),
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[*conn]struct{}),
	}
}

// Handler returns the bridge's HTTP handler: a WebSocket upgrade on any path,
// GET /health, GET /status and POST /flush. An Authorization header of the
// upgrade (or of /status and /flush), or else its token query parameter, is
// passed upstream as the gRPC "authorization" metadata of the calls made for
// it.
func (b *Bridge) Handler() http.Handler {
	return http.HandlerFunc(b.serveHTTP)
}

// Connections returns the number of open WebSocket connections.
func (b *Bridge) Connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Close closes every WebSocket connection and upstream stream at once and
// waits for the bridge's goroutines to end. It does not close Config.Upstream.
func (b *Bridge) Close() error {
	b.mu.Lock()
	b.closed = true
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	b.cancel()
	for _, c := range conns {
		c.closing.Store(true)
		_ = c.ws.CloseNow()
	}
	b.wg.Wait()
	b.closeRedirects()
	return nil
}

// Shutdown sends every WebSocket a close frame (going away), gives the
// connections until ctx ends to finish the closing handshake, then closes
// what is left as Close does.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()

	work := make(chan *conn)
	var wg sync.WaitGroup
	for range min(len(conns), 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.closeWS(websocket.StatusGoingAway, "bridge shutting down")
			}
		}()
	}
	for _, c := range conns {
		select {
		case work <- c:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("wsbridge: shutdown: %w", ctx.Err())
		// A closing handshake still waiting (a peer that does not read
		// waits out the library's own timeouts, seconds per connection)
		// ends with its connection: CloseNow cannot cut a Close in
		// progress.
		for _, c := range conns {
			_ = c.raw.Close()
		}
	}
	<-done
	_ = b.Close()
	return err
}

// goAdd starts f in a goroutine tracked by Close, unless the bridge is closed.
func (b *Bridge) goAdd(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

func (b *Bridge) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if isUpgrade(r) {
		b.serveWS(w, r)
		return
	}
	switch r.URL.Path {
	case "/health":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "OK")
	case "/status":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		b.serveStatus(w, r)
	case "/flush":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		b.serveFlush(w, r)
	default:
		http.NotFound(w, r)
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "websocket") {
				return true
			}
		}
	}
	return false
}

// serveWS upgrades the request and hands the socket to its own goroutine, so
// that net/http's per-request state is released while the connection idles.
func (b *Bridge) serveWS(w http.ResponseWriter, r *http.Request) {
	release, refusal := b.admit(r)
	if refusal != "" {
		w.Header().Set("Retry-After", "5")
		http.Error(w, refusal, http.StatusServiceUnavailable)
		return
	}
	defer func() { release() }() // until the connection's goroutine owns it
	c := &conn{
		b:           b,
		connectedAt: time.Now(),
		source:      r.Header.Get("X-Client-ID"),
		shard:       r.Header.Get("X-Shard-Name"),
		auth:        auth.FromRequest(r),
		remote:      r.RemoteAddr,
	}
	c.sourceFromHeader = c.source != ""
	c.shardFromHeader = c.shard != ""
	ws, err := websocket.Accept(smallBufWriter{w, b.cfg.ReadBufferSize, b.cfg.WriteBufferSize, &c.raw}, r, &websocket.AcceptOptions{
		OriginPatterns: b.cfg.OriginPatterns,
	})
	if err != nil {
		b.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(-1) // the bridge enforces MaxMessageSize itself without closing
	c.ws = ws

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = ws.CloseNow()
		return
	}
	b.conns[c] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	c.armPing()
	done := release
	release = func() {}
	go func() {
		defer b.wg.Done()
		defer done()
		c.run()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
	}()
}

// getBuf returns a pooled read buffer.
func (b *Bridge) getBuf() *[]byte {
	if p, ok := b.bufs.Get().(*[]byte); ok {
		return p
	}
	s := make([]byte, 0, 4096)
	return &s
}

// maxPooledBuf is the largest buffer kept for reuse.
const maxPooledBuf = 1 << 20

func (b *Bridge) putBuf(p *[]byte) {
	if cap(*p) > maxPooledBuf {
		return
	}
	*p = (*p)[:0]
	b.bufs.Put(p)
}

// authFor returns the authorization value of the connection's upstream calls
// for source: the child's own, or the bridge's token for an allowed source.
func (c *conn) authFor(source string) (string, error) {
	if c.auth != "" || c.b.cfg.Token == "" {
		return c.auth, nil
	}
	if !auth.MatchSource(c.b.cfg.AllowSources, source) {
		return "", status.Errorf(codes.PermissionDenied, "source %q is not in the bridge's --allow-sources and the child sent no token", source)
	}
	return "Bearer " + c.b.cfg.Token, nil
}

// errClosed reports that the bridge is closed.
var errClosed = errors.New("wsbridge: bridge closed")

// withAuth adds an Authorization header value to ctx as outgoing gRPC
// metadata.
func withAuth(ctx context.Context, auth string) context.Context {
	if auth == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", auth)
}
