// Package auth checks the bearer tokens of the lakehouse server: a token file
// lists tokens by the SHA-256 of their secret, each bound to the source ids it
// may write and to scopes (flush, status, admin). gRPC interceptors and an
// HTTP middleware check every call; the file is reloaded on SIGHUP or when it
// changes, and the open streams of a revoked token are closed.
//
// Other parts of the server learn who is calling through FromContext: the
// interceptors and the middleware put the authenticated Principal in the
// context of every call they let through. Interceptors that need it (rate
// limits, per-token caps) must run after this package's, i.e. come later in
// grpc.ChainUnaryInterceptor / ChainStreamInterceptor.
package auth

import (
	"context"
	"path"
	"slices"
)

// Scopes a token can hold besides writing its sources.
const (
	ScopeFlush  = "flush"  // the Flush RPC (and a stream's flush request is a batch-level barrier, always allowed)
	ScopeStatus = "status" // the GetStatus RPC
	ScopeAdmin  = "admin"  // Flush, GetStatus, and the HTTP admin endpoints (/status, /flush, /metrics, /debug/pprof, the status page)
)

// Principal is an authenticated token.
type Principal struct {
	// Name is the token's name in the token file: a stable key for per-token
	// limits and for logs. It is never the secret.
	Name string
	// Admin is true for a token with the admin scope.
	Admin bool
	// Scopes are the token's scopes (flush, status, admin).
	Scopes []string
	// Sources are the source ids (or path.Match globs) the token may write.
	Sources []string
	// EntriesPerSec and BytesPerSec are the token's optional rate limit
	// (0: none). This package only parses them; the server's limits
	// enforce them.
	EntriesPerSec float64
	BytesPerSec   float64

	hash [32]byte // the token's SHA-256, to find it again after a reload
}

// Has reports whether p holds scope; admin holds every scope.
func (p Principal) Has(scope string) bool {
	return p.Admin || slices.Contains(p.Scopes, scope)
}

// AllowsSource reports whether p may write source id.
func (p Principal) AllowsSource(id string) bool {
	return MatchSource(p.Sources, id)
}

// MatchSource reports whether id matches one of patterns (exact ids or
// path.Match globs; "*" does not cross "/").
func MatchSource(patterns []string, id string) bool {
	for _, pat := range patterns {
		if pat == id {
			return true
		}
		if ok, err := path.Match(pat, id); err == nil && ok {
			return true
		}
	}
	return false
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of an authenticated call; ok is false
// when tokens are not configured (or ctx is not a call's).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
