package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/dot-do/lakehouse-rpc/client"

	"github.com/dot-do/lakehouse-rpc/internal/connpool"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/wsbridge"
)

// runBridge runs the WebSocket bridge alone, in front of a remote gRPC server:
// legacy children connect to --http-addr, their batches go to --upstream.
func runBridge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		upstream    = fs.String("upstream", "", "gRPC address of the lakehouse server, HOST:PORT (required)")
		httpAddr    = fs.String("http-addr", defaultHTTPAddr, "HTTP listen address: WebSocket upgrade on any path, /health, /status, /flush")
		level       = fs.String("log-level", "info", "log level: debug, info, warn, error")
		maxConns    = fs.Int("max-connections", 0, "cap on concurrent WebSocket connections (0: no cap)")
		maxPerAddr  = fs.Int(maxWSConnsPerAddrKey, maxWSConnsPerAddrDefault, "cap on concurrent WebSocket connections from one IP address; more get HTTP 503 (0: no cap)")
		upIdle      = fs.Duration("upstream-idle-timeout", wsbridge.DefaultUpstreamIdleTimeout, "close a connection's upstream stream after this long without batches (it reopens on the next batch)")
		idle        = fs.Duration("idle-timeout", 0, "close a WebSocket that sends nothing, not even heartbeats, for this long (0: never)")
		maxMsg      = fs.Int64("max-message-size", wsbridge.DefaultMaxMessageSize, "largest WebSocket message accepted, in bytes")
		drain       = fs.Duration("shutdown-timeout", 10*time.Second, "how long SIGTERM/SIGINT may take to close the connections")
		originAllow = fs.String("allowed-origin", "", "host pattern of browser origins allowed to upgrade (legacy children send no Origin)")
		tlsCert     = fs.String("tls-cert", "", "serve HTTPS/WSS with this certificate file (PEM; with --tls-key)")
		tlsKey      = fs.String("tls-key", "", "private key file of --tls-cert (PEM)")
		allow       = fs.String("allow-sources", "", "with --token: comma-separated source ids or globs the bridge's own token is used for; children that send no token of their own may only connect as these")
		upKATime    = fs.Duration("upstream-keepalive-time", client.DefaultKeepaliveTime, "ping the upstream connection after this long without anything received (0: off; else at least 10s)")
		upKATO      = fs.Duration("upstream-keepalive-timeout", client.DefaultKeepaliveTimeout, "replace the upstream connection when a keepalive ping is not answered within this time (a stalled link)")
		pingEvery   = fs.Duration("ping-interval", wsbridge.DefaultPingInterval, "send each legacy child a WebSocket ping this often (negative: never)")
		pingTO      = fs.Duration("ping-timeout", wsbridge.DefaultPingTimeout, "close a child's connection when its pong takes longer than this")
	)
	var timeouts httpTimeouts
	timeouts.register(fs)
	var up connFlags
	up.register(fs, "upstream")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := timeouts.validate(); err != nil {
		return err
	}
	if *maxConns < 0 || *maxPerAddr < 0 {
		return fmt.Errorf("--max-connections %d, --%s %d: want 0 (no cap) or more", *maxConns, maxWSConnsPerAddrKey, *maxPerAddr)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *upstream == "" {
		return errors.New("--upstream is required (the lakehouse server's gRPC address, HOST:PORT)")
	}
	if _, _, err := net.SplitHostPort(*upstream); err != nil {
		return fmt.Errorf("--upstream %q: %w", *upstream, err)
	}
	if *upKATime != 0 && *upKATime < client.MinKeepaliveTime {
		return fmt.Errorf("--upstream-keepalive-time %v: want 0 (off) or at least %v", *upKATime, client.MinKeepaliveTime)
	}
	if *upKATO <= 0 {
		return fmt.Errorf("--upstream-keepalive-timeout %v: want more than 0", *upKATO)
	}
	if *pingEvery == 0 || *pingTO <= 0 {
		return fmt.Errorf("--ping-interval %v / --ping-timeout %v: want a non-zero interval (negative: never) and a timeout more than 0", *pingEvery, *pingTO)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	upTLS, err := up.tlsConfig()
	if err != nil {
		return err
	}
	ownToken, err := up.bearer()
	if err != nil {
		return err
	}
	allowList := splitList(*allow)
	if (ownToken == "") != (len(allowList) == 0) {
		return errors.New("--token (or --token-file) and --allow-sources go together: the bridge's own token is only lent to the sources listed")
	}
	creds := insecure.NewCredentials()
	if upTLS != nil {
		creds = credentials.NewTLS(upTLS)
	}
	// Several connections: one HTTP/2 connection would carry every
	// child's stream through one reader goroutine at each end. The token
	// is not a dial option: each child's own token is forwarded per call.
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(creds), server.GRPCCallLimits()}
	if *upKATime > 0 {
		// A stalled upstream link (no FIN) fails its streams: their
		// batches are nacked with retry and the next ones reconnect.
		dopts = append(dopts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: *upKATime, Timeout: *upKATO, PermitWithoutStream: true}))
	}
	cc, err := connpool.Dial(*upstream, upstreamConns, dopts...)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", *upstream, err)
	}
	defer cc.Close()

	cfg := wsbridge.Config{
		Upstream:              cc,
		Logger:                log,
		MaxMessageSize:        *maxMsg,
		IdleTimeout:           *idle,
		UpstreamIdleTimeout:   *upIdle,
		MaxConnections:        *maxConns,
		MaxConnectionsPerAddr: *maxPerAddr,
		PingInterval:          *pingEvery,
		PingTimeout:           *pingTO,
		Token:                 ownToken,
		AllowSources:          allowList,
		// Redirects to a source's owner (multi-instance servers) are
		// dialed as the upstream is.
		DialRedirect: func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(creds), server.GRPCCallLimits())
		},
	}
	if *originAllow != "" {
		cfg.OriginPatterns = []string{*originAllow}
	}
	bridge := wsbridge.New(cfg)
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		_ = bridge.Close()
		return fmt.Errorf("listen %s: %w", *httpAddr, err)
	}
	hs := timeouts.server(bridge.Handler())
	serveErr := make(chan error, 1)
	scheme := "http"
	go func() {
		if *tlsCert != "" {
			serveErr <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
			return
		}
		serveErr <- hs.Serve(ln)
	}()
	if *tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "lakehouse bridge listening on %s://%s (WebSocket, /health, /status, /flush), upstream %s\n", scheme, ln.Addr(), *upstream)
	log.Info("bridge listening", "addr", ln.Addr().String(), "upstream", *upstream)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("bridge shutting down")
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	_ = hs.Shutdown(sctx) // stops accepting; hijacked WebSockets are the bridge's
	if err := bridge.Shutdown(sctx); err != nil {
		log.Warn("bridge shutdown", "err", err)
	}
	if runErr == nil {
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("http server: %w", err)
		}
	}
	return runErr
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
