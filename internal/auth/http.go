package auth

import (
	"net/http"
	"strings"
)

// FromRequest returns the authorization value of an HTTP request: its
// Authorization header, or "Bearer " + its token query parameter (browsers
// and legacy children cannot always set headers on a WebSocket upgrade).
func FromRequest(r *http.Request) string {
	if v := r.Header.Get("Authorization"); v != "" {
		return v
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return "Bearer " + t
	}
	return ""
}

// cookieName holds an admin token for the status page's own requests.
const cookieName = "lakehouse_token"

// RequireAdmin wraps an HTTP handler of admin endpoints: the request needs a
// token with the admin scope. WebSocket upgrades pass through to next (their
// token is checked by the gRPC server the bridge forwards them to) and so
// does /health, which never needs a token.
func (s *Store) RequireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || isUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		authz := FromRequest(r)
		if c, err := r.Cookie(cookieName); authz == "" && err == nil {
			authz = "Bearer " + c.Value
		}
		p, err := s.Authenticate(authz)
		if err != nil {
			s.refused.WithLabelValues("unauthenticated").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="lakehouse"`)
			http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if !p.Admin {
			s.refused.WithLabelValues("permission_denied").Inc()
			http.Error(w, "forbidden: token "+p.Name+" lacks the admin scope", http.StatusForbidden)
			return
		}
		if t := r.URL.Query().Get("token"); t != "" && r.Header.Get("Authorization") == "" {
			// A browser opened the status page with ?token=: its own
			// requests (/api/history...) carry the token as a cookie.
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: t, Path: "/", HttpOnly: true,
				Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
	})
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
