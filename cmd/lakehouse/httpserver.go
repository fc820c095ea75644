package main

import (
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// httpTimeouts protect the HTTP listener (serve's and the standalone
// bridge's) against slow clients (slowloris): a client that dribbles its
// headers, idles on a keep-alive connection or does not read its response
// does not hold a connection and a goroutine for long.
type httpTimeouts struct {
	readHeader, idle, write time.Duration
}

func (t *httpTimeouts) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.readHeader, httpReadHeaderTimeoutKey, httpReadHeaderTimeoutDefault, "time a client has to send a request's headers; slower connections are closed (slowloris)")
	fs.DurationVar(&t.idle, httpIdleTimeoutKey, httpIdleTimeoutDefault, "idle keep-alive HTTP connections are closed after this long (0: never)")
	fs.DurationVar(&t.write, httpWriteTimeoutKey, httpWriteTimeoutDefault, "time to write one HTTP response (WebSockets exempt; pprof profiles get their duration more) (0: none)")
}

// defaultHTTPTimeouts are the flags' defaults (for the in-process server of
// bench, which has no flags for them).
func defaultHTTPTimeouts() httpTimeouts {
	return httpTimeouts{readHeader: httpReadHeaderTimeoutDefault, idle: httpIdleTimeoutDefault, write: httpWriteTimeoutDefault}
}

func (t *httpTimeouts) validate() error {
	switch {
	case t.readHeader <= 0:
		return fmt.Errorf("--%s %v: want more than 0 (it is the defence against slowloris)", httpReadHeaderTimeoutKey, t.readHeader)
	case t.idle < 0:
		return fmt.Errorf("--%s %v: want 0 or more", httpIdleTimeoutKey, t.idle)
	case t.write < 0:
		return fmt.Errorf("--%s %v: want 0 or more", httpWriteTimeoutKey, t.write)
	}
	return nil
}

// server returns an http.Server for h with the timeouts. The write timeout
// is set per request (http.ResponseController) rather than as the server's
// WriteTimeout, which would also bound a profile of ?seconds=30 (pprof
// refuses one longer than WriteTimeout); WebSocket upgrades get none: the
// bridge bounds each of its writes itself, and net/http clears a hijacked
// connection's deadlines.
func (t *httpTimeouts) server(h http.Handler) *http.Server {
	if t.write > 0 {
		h = writeDeadline(h, t.write)
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: t.readHeader, IdleTimeout: t.idle}
}

func writeDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocketUpgrade(r) {
			dl := d
			if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
				if sec, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64); err == nil && sec > 0 && sec < 1e6 {
					dl += time.Duration(sec * float64(time.Second))
				}
			}
			// Set for every request: a keep-alive connection's previous
			// deadline must not carry over.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(dl))
		}
		h.ServeHTTP(w, r)
	})
}

func isWebSocketUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "websocket") {
				return true
			}
		}
	}
	return false
}
