package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPollInterval is how often Watch checks the token file for changes.
const DefaultPollInterval = 2 * time.Second

// Store holds the token file in force. It is safe for concurrent use.
type Store struct {
	path string
	log  *slog.Logger

	table   atomic.Pointer[table]
	refused *prometheus.CounterVec // by reason; no token or source labels

	mu      sync.Mutex // serialises reloads and guards streams and stamp
	stamp   fileStamp
	streams map[*tracked]struct{}
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// tracked is an open stream, closed if its token is revoked.
type tracked struct {
	hash   [32]byte
	source string // "" until its connect is checked
	cancel context.CancelCauseFunc
}

// errRevoked is the cause of a stream closed by a reload.
var errRevoked = errors.New("token revoked")

// Open reads the token file at path. reg, when set, receives the refusal
// counter lakehouse_auth_refusals_total{reason}.
func Open(path string, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, log: log, streams: map[*tracked]struct{}{}}
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lakehouse_auth_refusals_total",
		Help: "Calls refused by token checks, by reason (unauthenticated, permission_denied, revoked).",
	}, []string{"reason"})
	if reg != nil {
		if err := reg.Register(s.refused); err != nil {
			return nil, err
		}
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewStatic returns a store over a parsed file (tests, embedding).
func NewStatic(data []byte) (*Store, error) {
	t, err := ParseFile(data)
	if err != nil {
		return nil, err
	}
	s := &Store{log: slog.New(slog.DiscardHandler), streams: map[*tracked]struct{}{}}
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lakehouse_auth_refusals_total"}, []string{"reason"})
	s.table.Store(t)
	return s, nil
}

// Reload reads the token file again. On error the tokens in force stay. Open
// streams whose token is gone, or no longer allows their source, are closed.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *Store) reloadLocked() error {
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("--auth-tokens: %w", err)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("--auth-tokens: %w", err)
	}
	t, err := ParseFile(data)
	if err != nil {
		return fmt.Errorf("--auth-tokens %s: %w", s.path, err)
	}
	first := s.table.Load() == nil
	s.table.Store(t)
	s.stamp = fileStamp{fi.Size(), fi.ModTime()}
	revoked := 0
	for st := range s.streams {
		p, ok := t.byHash(st.hash)
		if !ok || (st.source != "" && !p.AllowsSource(st.source)) {
			st.cancel(errRevoked)
			delete(s.streams, st)
			revoked++
		}
	}
	if !first {
		s.log.Info("token file reloaded", "tokens", len(t.principals), "streams_closed", revoked)
	}
	if revoked > 0 {
		s.refused.WithLabelValues("revoked").Add(float64(revoked))
	}
	return nil
}

// Watch reloads the file whenever its size or modification time changes,
// checking every interval (DefaultPollInterval when <= 0), until ctx ends.
// A file that fails to parse is logged and the tokens in force stay.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		fi, err := os.Stat(s.path)
		if err != nil {
			continue
		}
		s.mu.Lock()
		if (fileStamp{fi.Size(), fi.ModTime()}) != s.stamp {
			if err := s.reloadLocked(); err != nil {
				s.log.Warn("token file changed but could not be loaded; the previous tokens stay in force", "err", err)
				s.stamp = fileStamp{fi.Size(), fi.ModTime()} // logged once per change
			}
		}
		s.mu.Unlock()
	}
}

// Authenticate returns the principal of an "authorization" value
// ("Bearer <secret>").
func (s *Store) Authenticate(authorization string) (Principal, error) {
	secret, err := bearer(authorization)
	if err != nil {
		return Principal{}, err
	}
	p, ok := s.table.Load().lookup(secret)
	if !ok {
		return Principal{}, errUnknownToken
	}
	return p, nil
}

var errUnknownToken = errors.New("unknown token")

// track registers an open stream of p; untrack removes it.
func (s *Store) track(p Principal, cancel context.CancelCauseFunc) *tracked {
	t := &tracked{hash: p.hash, cancel: cancel}
	s.mu.Lock()
	s.streams[t] = struct{}{}
	s.mu.Unlock()
	return t
}

// bind checks that a tracked stream's token, as now in force, may write
// source, and records it so that a later reload re-checks it. It reports
// errRevoked when the token was revoked since the stream opened.
func (s *Store) bind(t *tracked, source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.streams[t]; !ok {
		return errRevoked
	}
	p, ok := s.table.Load().byHash(t.hash)
	if !ok {
		return errRevoked
	}
	if !p.AllowsSource(source) {
		return errSourceDenied
	}
	t.source = source
	return nil
}

var errSourceDenied = errors.New("source not allowed")

func (s *Store) untrack(t *tracked) {
	s.mu.Lock()
	delete(s.streams, t)
	s.mu.Unlock()
}
