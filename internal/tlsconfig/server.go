// Package tlsconfig builds the TLS configurations of the lakehouse listeners
// and clients. A server's certificate, key and client CA are read from files
// and reloaded without a restart: each handshake checks (at most once per
// PollInterval) whether the files changed, and Reload forces a re-read (on
// SIGHUP). A reload that fails keeps the previous, working configuration.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ClientAuth modes of Server.ClientAuth.
const (
	ClientAuthNone    = "none"
	ClientAuthRequest = "request" // a client certificate is verified if one is sent
	ClientAuthRequire = "require" // mTLS: a verified client certificate is required
)

// DefaultPollInterval is how often, at most, a handshake checks the files'
// modification times.
const DefaultPollInterval = 2 * time.Second

// Server describes a listener's TLS: certificate and key files, and
// optionally the CA that client certificates must chain to.
type Server struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string // required by ClientAuth request and require
	ClientAuth   string // none (default), request, require
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Enabled reports whether TLS is configured.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// Validate checks the combination of fields, naming the flag at fault.
func (s Server) Validate() error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	switch s.ClientAuth {
	case "", ClientAuthNone:
	case ClientAuthRequest, ClientAuthRequire:
		if s.ClientCAFile == "" {
			return fmt.Errorf("--tls-client-auth=%s needs --tls-client-ca", s.ClientAuth)
		}
	default:
		return fmt.Errorf("--tls-client-auth: %q is not none, request or require", s.ClientAuth)
	}
	if s.ClientCAFile != "" && !s.Enabled() {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	return nil
}

// Reloader serves a Server's configuration to handshakes, re-reading the
// files when they change.
type Reloader struct {
	cfg Server
	log *slog.Logger

	mu        sync.Mutex
	current   *tls.Config
	stamp     fileStamp
	checkedAt time.Time
}

// fileStamp identifies a version of the files by size and modification time.
type fileStamp [3]struct {
	size int64
	mod  time.Time
}

// NewReloader loads the files once (failing on any error) and returns the
// reloader.
func NewReloader(cfg Server) (*Reloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("tlsconfig: no certificate configured")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	r := &Reloader{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Config returns the tls.Config to give a listener: each handshake gets the
// current configuration through GetConfigForClient.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.get(), nil },
	}
}

// Current returns the configuration in force (after a change check).
func (r *Reloader) Current() *tls.Config { return r.get() }

// get returns the current configuration, reloading it first when the poll
// interval has passed and the files changed.
func (r *Reloader) get() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checkedAt) >= r.cfg.PollInterval {
		r.checkedAt = now
		if st, err := r.stat(); err == nil && st != r.stamp {
			if err := r.reloadLocked(); err != nil {
				r.log.Warn("TLS files changed but could not be loaded; keeping the previous certificate", "err", err)
			}
		}
	}
	return r.current
}

// Reload re-reads the files now (SIGHUP). On error the previous configuration
// stays in force.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Reloader) reloadLocked() error {
	st, err := r.stat()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		// A certificate and key rewritten one after the other do not
		// match in between; the stamp is kept so the next check retries.
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if r.cfg.ClientCAFile != "" {
		pool, err := loadPool(r.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("--tls-client-ca: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		switch r.cfg.ClientAuth {
		case ClientAuthRequire:
			c.ClientAuth = tls.RequireAndVerifyClientCert
		case "", ClientAuthNone:
			c.ClientAuth = tls.NoClientCert
		}
	}
	if r.current != nil {
		r.log.Info("TLS certificate reloaded", "cert", r.cfg.CertFile)
	}
	r.current, r.stamp = c, st
	return nil
}

func (r *Reloader) stat() (fileStamp, error) {
	var st fileStamp
	for i, f := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return st, err
		}
		st[i].size, st[i].mod = fi.Size(), fi.ModTime()
	}
	return st, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}
