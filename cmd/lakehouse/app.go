package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/connpool"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
	"github.com/dot-do/lakehouse-rpc/statuspage"
	"github.com/dot-do/lakehouse-rpc/wsbridge"
)

// appConfig describes one aggregator process: `serve`, or the server `bench`
// runs in-process.
type appConfig struct {
	// Server configures the aggregator; its Sink is set by start.
	Server server.Config
	// OpenSink opens the sink; the app closes it.
	OpenSink func(ctx context.Context) (sink.Sink, error)
	// GRPCAddr is the gRPC listen address ("127.0.0.1:0": any port).
	GRPCAddr string
	// GRPCOptions are added to the server's own (transport options).
	GRPCOptions []grpc.ServerOption
	// HTTPAddr, when set, serves the WebSocket bridge, /health, /status,
	// /flush, and /metrics when Metrics is set.
	HTTPAddr string
	// Metrics is exposed at /metrics.
	Metrics *prometheus.Registry
	// PProf adds /debug/pprof/ to the HTTP endpoints.
	PProf bool
	// Logger logs the app's life cycle.
	Logger *slog.Logger
	// Maintain runs table maintenance in the background when the sink
	// maintains tables (the Iceberg sink).
	Maintain bool
	// StatusPage serves the live status page at / (plain GET) on HTTPAddr,
	// from a 15-minute history of the server's status and Metrics.
	StatusPage bool
	// Limits are serve's limit flags for the bridge and the HTTP server;
	// nil: the flags' defaults for the HTTP timeouts, no WebSocket caps.
	// (Server limits are in Server.)
	Limits *limitFlags
	// TLS, when set, serves both listeners with TLS (a fresh configuration
	// per listener: newTLS is called once for each).
	TLS func() *tls.Config
	// Auth, when set, checks bearer tokens on every gRPC call and on the
	// HTTP endpoints other than /health and WebSocket upgrades (whose
	// streams the gRPC checks cover).
	Auth *auth.Store
}

// app is a running aggregator. startApp builds its parts in order; stop takes
// down whichever exist, in the reverse order of their dependencies, and
// reports every error. A start that fails part way calls the same stop, so
// every exit path cleans up the same way.
type app struct {
	log     *slog.Logger
	sink    sink.Sink
	srv     *server.Server
	gs      *grpc.Server
	grpcLis net.Listener
	// With TLS on, the embedded bridge reaches the server through an
	// internal gRPC server on a private Unix socket, which checks tokens
	// like gs but has no TLS (and asks no client certificate of the bridge).
	innerGS  *grpc.Server
	innerLis net.Listener
	innerDir string
	upstream *connpool.Pool // the bridge's connections to gs
	bridge   *wsbridge.Bridge
	httpLis  net.Listener
	hs       *http.Server
	failed   chan error // a listener's Serve failed

	stopMaint context.CancelFunc // nil unless maintenance runs
	maintDone chan struct{}
	// stopMirror ends the background mirror compaction (nil unless
	// mirrors are on); mirrorDone closes when it has.
	stopMirror context.CancelFunc
	mirrorDone chan struct{}
	stopHist   context.CancelFunc // nil unless the status page runs
	histDone   chan struct{}
}

// upstreamConns is how many gRPC connections the WebSocket bridge spreads its
// children's streams over.
const upstreamConns = 4

// startApp starts an aggregator. On error nothing is left running.
func startApp(ctx context.Context, cfg appConfig) (_ *app, err error) {
	a := &app{log: cfg.Logger, failed: make(chan error, 3)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			err = errors.Join(err, a.stop(sctx))
		}
	}()
	// Opening reads the catalog (and, for some, the store): bounded like
	// every other sink call, so that a stalled catalog fails the start
	// with an error instead of hanging it.
	openTimeout := cfg.Server.CommitTimeout
	if openTimeout <= 0 {
		openTimeout = server.DefaultCommitTimeout
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	a.sink, err = cfg.OpenSink(octx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("open sink (commit timeout %v): %w", openTimeout, err)
	}
	cfg.Server.Sink = a.sink
	if isk, ok := a.sink.(*iceberg.Sink); ok {
		if cfg.Metrics != nil {
			cfg.Metrics.MustRegister(isk.Collector())
		}
		if cfg.Maintain {
			var mctx context.Context
			mctx, a.stopMaint = context.WithCancel(context.WithoutCancel(ctx))
			a.maintDone = make(chan struct{})
			go func() { defer close(a.maintDone); isk.RunMaintenance(mctx) }()
		}
		if isk.Config().Mirror {
			var mctx context.Context
			mctx, a.stopMirror = context.WithCancel(context.WithoutCancel(ctx))
			a.mirrorDone = make(chan struct{})
			go func() { defer close(a.mirrorDone); isk.RunMirrorCompaction(mctx) }()
		}
	}
	if a.srv, err = server.New(ctx, cfg.Server); err != nil {
		return nil, err
	}
	if a.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("gRPC listen: %w", err)
	}
	opts := append(a.srv.GRPCOptions(), cfg.GRPCOptions...)
	if cfg.Auth != nil {
		// First, so that later interceptors (limits) see the principal.
		opts = append(cfg.Auth.ServerOptions(), opts...)
	}
	gsOpts := opts
	if cfg.TLS != nil {
		gsOpts = append(gsOpts[:len(gsOpts):len(gsOpts)], grpc.Creds(credentials.NewTLS(cfg.TLS())))
	}
	a.gs = grpc.NewServer(gsOpts...)
	a.srv.Register(a.gs)
	go func() { a.failed <- a.gs.Serve(a.grpcLis) }()
	if cfg.HTTPAddr == "" {
		return a, nil
	}
	// The bridge talks to this server through gRPC: one code path for the
	// in-process and the standalone bridge.
	target := a.grpcLis.Addr().String()
	if cfg.TLS != nil {
		if target, err = a.startInner(opts); err != nil {
			return nil, err
		}
	}
	a.upstream, err = connpool.Dial(target, upstreamConns, grpc.WithTransportCredentials(insecure.NewCredentials()),
		server.GRPCCallLimits())
	if err != nil {
		return nil, fmt.Errorf("bridge upstream: %w", err)
	}
	bcfg := wsbridge.Config{Upstream: a.upstream, Logger: a.log, MaxMessageSize: int64(cfg.Server.MaxMessageSize)}
	if cfg.TLS == nil {
		// Multi-instance mode: legacy children of a source another
		// instance owns are bridged to it (its advertised gRPC address).
		// With TLS the peers' client credentials are not configured: a
		// Redirect is then an upstream failure and the child retries.
		bcfg.DialRedirect = func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), server.GRPCCallLimits())
		}
	}
	timeouts := defaultHTTPTimeouts()
	if cfg.Limits != nil {
		cfg.Limits.applyBridge(&bcfg)
		timeouts = cfg.Limits.http
	}
	a.bridge = wsbridge.New(bcfg)
	if a.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP listen: %w", err)
	}
	if cfg.TLS != nil {
		a.httpLis = tls.NewListener(a.httpLis, cfg.TLS())
	}
	mux := http.NewServeMux()
	if cfg.StatusPage {
		// A plain GET of / is the status page; WebSocket upgrades on any
		// path, and /health, /status, /flush, reach the bridge as before.
		hc := statuspage.HistoryConfig{Status: a.srv.Status, Commits: a.srv.RecentCommits}
		if cfg.Metrics != nil {
			hc.Gatherer = cfg.Metrics
		}
		hist := statuspage.NewHistory(hc)
		var hctx context.Context
		hctx, a.stopHist = context.WithCancel(context.WithoutCancel(ctx))
		a.histDone = make(chan struct{})
		go func() { defer close(a.histDone); hist.Run(hctx) }()
		mux.Handle("/", statuspage.Handler(hist, a.bridge.Handler()))
	} else {
		mux.Handle("/", a.bridge.Handler())
	}
	if cfg.Metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	}
	if cfg.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	var handler http.Handler = mux
	if cfg.Auth != nil {
		handler = cfg.Auth.RequireAdmin(mux)
	}
	a.hs = timeouts.server(handler)
	go func() {
		if err := a.hs.Serve(a.httpLis); !errors.Is(err, http.ErrServerClosed) {
			a.failed <- err
		}
	}()
	return a, nil
}

// startInner starts the internal gRPC server of the embedded bridge on a
// Unix socket in a private (0700) temporary directory and returns its target.
func (a *app) startInner(opts []grpc.ServerOption) (string, error) {
	var err error
	if a.innerDir, err = os.MkdirTemp("", "lakehouse-"); err != nil {
		return "", fmt.Errorf("bridge socket: %w", err)
	}
	sock := filepath.Join(a.innerDir, "grpc.sock")
	if a.innerLis, err = net.Listen("unix", sock); err != nil {
		return "", fmt.Errorf("bridge socket: %w", err)
	}
	a.innerGS = grpc.NewServer(opts...)
	a.srv.Register(a.innerGS)
	go func() { a.failed <- a.innerGS.Serve(a.innerLis) }()
	return "unix://" + sock, nil
}

// grpcAddr and httpAddr are the listen addresses ("" when not listening).
func (a *app) grpcAddr() string { return addrOf(a.grpcLis) }
func (a *app) httpAddr() string { return addrOf(a.httpLis) }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// wait returns when ctx ends (nil) or a listener fails (its error).
func (a *app) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-a.failed:
		return fmt.Errorf("listener failed: %w", err)
	}
}

// stop drains and closes everything that was started, within ctx: legacy
// children are told "going away", the server flushes and closes its
// streams, gRPC stops (forcibly after its drain share, stopGRPC), then the
// bridge's upstream connections and the sink close. Parts not started are
// skipped; no wait outlasts ctx.
func (a *app) stop(ctx context.Context) error {
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if a.bridge != nil {
		note("bridge shutdown", a.bridge.Shutdown(ctx))
	}
	if a.hs != nil {
		note("HTTP shutdown", a.hs.Shutdown(ctx))
	} else if a.httpLis != nil {
		note("HTTP listener", a.httpLis.Close())
	}
	if a.srv != nil {
		note("server shutdown", a.srv.Shutdown(ctx))
	}
	if a.gs != nil {
		note("gRPC stop", stopGRPC(ctx, a.gs, a.log))
	} else if a.grpcLis != nil {
		note("gRPC listener", a.grpcLis.Close())
	}
	if a.innerGS != nil {
		a.innerGS.Stop() // the bridge's streams ended with the server's shutdown
	} else if a.innerLis != nil {
		note("internal listener", a.innerLis.Close())
	}
	if a.innerDir != "" {
		note("internal socket", os.RemoveAll(a.innerDir))
	}
	if a.upstream != nil {
		note("bridge upstream", a.upstream.Close())
	}
	// The background loops end when cancelled; one stuck in a call that
	// ignores its context is left to the process's exit, and so is the
	// sink it may still use.
	running := false
	for _, bg := range []struct {
		what string
		stop context.CancelFunc
		done chan struct{}
	}{{"status history", a.stopHist, a.histDone}, {"mirror compaction", a.stopMirror, a.mirrorDone},
		{"maintenance", a.stopMaint, a.maintDone}} {
		if bg.stop == nil {
			continue
		}
		bg.stop()
		select {
		case <-bg.done:
		case <-ctx.Done():
			running = true
			note(bg.what, fmt.Errorf("still running after the shutdown timeout: %w", ctx.Err()))
		}
	}
	if a.sink != nil && !running {
		// A sink call still stuck (the server's shutdown left it running
		// past the deadline) may hold what Close waits for.
		closed := make(chan error, 1)
		go func() { closed <- a.sink.Close() }()
		select {
		case err := <-closed:
			note("sink close", err)
		case <-ctx.Done():
			note("sink close", fmt.Errorf("still running after the shutdown timeout: %w", ctx.Err()))
		}
	}
	return errors.Join(errs...)
}
