package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
)

// securityFlags are serve's TLS, token and exposure flags.
type securityFlags struct {
	tls      tlsconfig.Server
	tokens   string
	insecure bool
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tls.CertFile, "tls-cert", "", "serve gRPC and HTTP/WebSocket with TLS using this certificate file (PEM; with --tls-key); reloaded when it changes or on SIGHUP")
	fs.StringVar(&f.tls.KeyFile, "tls-key", "", "private key file of --tls-cert (PEM)")
	fs.StringVar(&f.tls.ClientCAFile, "tls-client-ca", "", "CA certificate file (PEM) that client certificates must chain to (mTLS)")
	fs.StringVar(&f.tls.ClientAuth, "tls-client-auth", tlsconfig.ClientAuthNone, "client certificates: none, request (verified when sent) or require (mTLS)")
	fs.StringVar(&f.tokens, "auth-tokens", "", "token file (YAML or JSON) of the bearer tokens allowed in, each bound to source ids and scopes (see docs/security.md); reloaded when it changes or on SIGHUP")
	fs.BoolVar(&f.insecure, "insecure", false, "allow listening on a non-loopback address without TLS and without tokens (anyone who reaches the port can write any source)")
}

// security is what the flags built: nil parts are off.
type security struct {
	tls    *tlsconfig.Reloader
	tokens *auth.Store
}

func (f *securityFlags) open(log *slog.Logger, reg prometheus.Registerer, grpcAddr, httpAddr string) (*security, error) {
	if err := f.tls.Validate(); err != nil {
		return nil, err
	}
	if err := checkExposure(log, f.tls.Enabled(), f.tokens != "", f.insecure, grpcAddr, httpAddr); err != nil {
		return nil, err
	}
	sec := &security{}
	var err error
	if f.tls.Enabled() {
		cfg := f.tls
		cfg.Logger = log
		if sec.tls, err = tlsconfig.NewReloader(cfg); err != nil {
			return nil, err
		}
	}
	if f.tokens != "" {
		if sec.tokens, err = auth.Open(f.tokens, log, reg); err != nil {
			return nil, err
		}
	}
	return sec, nil
}

// serverTLS returns the listeners' TLS configuration, nil when off.
func (s *security) serverTLS() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Config()
}

// watch reloads the certificate and the token file on SIGHUP, and the token
// file when it changes, until ctx ends. (Certificates are re-checked on
// handshakes.)
func (s *security) watch(ctx context.Context, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			log.Info("SIGHUP: reloading TLS files and tokens")
			if s.tls != nil {
				if err := s.tls.Reload(); err != nil {
					log.Warn("TLS reload failed; the previous certificate stays in force", "err", err)
				}
			}
			if s.tokens != nil {
				if err := s.tokens.Reload(); err != nil {
					log.Warn("token reload failed; the previous tokens stay in force", "err", err)
				}
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		if s.tokens != nil {
			s.tokens.Watch(ctx, tokenPollInterval())
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
		<-done
	}
}

// tokenPollEnv shortens the token file's change check (tests).
const tokenPollEnv = "LAKEHOUSE_TEST_TOKEN_POLL"

func tokenPollInterval() time.Duration {
	if v := os.Getenv(tokenPollEnv); v != "" {
		if p, err := time.ParseDuration(v); err == nil {
			return p
		}
	}
	return auth.DefaultPollInterval
}

// checkExposure refuses a listener on a non-loopback address when neither
// TLS nor tokens protect it, unless insecure is set (then it warns).
func checkExposure(log *slog.Logger, tlsOn, tokensOn, insecure bool, addrs ...string) error {
	if tlsOn || tokensOn {
		return nil
	}
	var exposed []string
	for _, a := range addrs {
		if a != "" && !isLoopback(a) {
			exposed = append(exposed, a)
		}
	}
	if len(exposed) == 0 {
		return nil
	}
	if !insecure {
		return fmt.Errorf("refusing to listen on %s without TLS or tokens: anyone who reaches it could write any source; "+
			"set --tls-cert/--tls-key and/or --auth-tokens (docs/security.md), listen on 127.0.0.1, or pass --insecure", strings.Join(exposed, ", "))
	}
	log.Warn("INSECURE: listening beyond loopback without TLS or tokens; anyone who reaches these addresses can write any source", "addrs", exposed)
	return nil
}

// isLoopback reports whether a listen address only binds loopback. An empty
// host binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
