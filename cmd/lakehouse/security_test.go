package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

func forBothTransports(t *testing.T, f func(t *testing.T, e *secEnv)) {
	for _, tlsOn := range []bool{false, true} {
		name := "plaintext"
		if tlsOn {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) { f(t, startSecure(t, tlsOn, tlsconfig.ClientAuthNone)) })
	}
}

// TestTokensGRPC: streams without a token, with a wrong token or with a token
// for other sources are refused with the right code before the server
// registers them, so the source's real stream keeps going; a frame whose
// sourceDoId names another source is nacked invalid_format; nothing refused
// is stored.
func TestTokensGRPC(t *testing.T) {
	forBothTransports(t, func(t *testing.T, e *secEnv) {
		real, err := e.connect(e.cc, e.secrets["victim-writer"], "victim")
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(1)
		ackNext := func() {
			t.Helper()
			if r := sendBatch(t, real, "victim", seq, int64(seq-1)*5); r.GetAck() == nil {
				t.Fatalf("real stream batch %d: %v", seq, r)
			}
			seq++
		}
		ackNext()
		for _, tc := range []struct {
			name, secret string
			want         codes.Code
		}{
			{"no token", "", codes.Unauthenticated},
			{"wrong token", "lht_not-a-real-token", codes.Unauthenticated},
			{"token of other sources", e.secrets["a-writer"], codes.PermissionDenied},
			{"admin token (no sources)", e.secrets["ops"], codes.PermissionDenied},
		} {
			_, err := e.connect(e.cc, tc.secret, "victim")
			if status.Code(err) != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
			ackNext() // the real stream was not fenced
		}
		// A stream of its own source cannot write into another one.
		other, err := e.connect(e.cc, e.secrets["a-writer"], "a-1")
		if err != nil {
			t.Fatal(err)
		}
		r := sendBatch(t, other, "victim", 1, 1000)
		if n := r.GetNack(); n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT || !strings.Contains(n.ErrorMessage, "sourceDoId") {
			t.Fatalf("frame naming another source: %v", r)
		}
		ackNext()

		// Flush and GetStatus need their scope.
		cdc := lakehousev1.NewCDCServiceClient(e.cc)
		ctx := e.t.Context()
		if _, err := cdc.Flush(bearerCtx(ctx, e.secrets["victim-writer"]), &lakehousev1.FlushRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Flush without the scope: %v", err)
		}
		if _, err := cdc.GetStatus(bearerCtx(ctx, e.secrets["a-writer"]), &lakehousev1.GetStatusRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("GetStatus without the scope: %v", err)
		}
		if _, err := cdc.GetStatus(ctx, &lakehousev1.GetStatusRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("GetStatus without a token: %v", err)
		}
		if _, err := cdc.GetStatus(bearerCtx(ctx, e.secrets["status-reader"]), &lakehousev1.GetStatusRequest{}); err != nil {
			t.Errorf("GetStatus with the status scope: %v", err)
		}
		if _, err := cdc.Flush(bearerCtx(ctx, e.secrets["a-writer"]), &lakehousev1.FlushRequest{}); err != nil {
			t.Errorf("Flush with the flush scope: %v", err)
		}
		rows := e.flushAndRows()
		if want := int(seq-1) * 5; rows["victim"] != want || rows["a-1"] != 0 || len(rows) != 1 {
			t.Fatalf("stored rows %v, want victim: %d only", rows, want)
		}
		e.checkNoSecretsLogged()
	})
}

// TestTokensWebSocket is TestTokensGRPC for legacy children through the
// embedded bridge: the token comes in the Authorization header or the token
// query parameter and is forwarded upstream.
func TestTokensWebSocket(t *testing.T) {
	forBothTransports(t, func(t *testing.T, e *secEnv) {
		real := e.dialWS(e.secrets["victim-writer"], true)
		real.connect("victim-ws")
		seq := uint64(1)
		ackNext := func() {
			t.Helper()
			real.sendBatch("victim-ws", seq, int64(seq-1)*5)
			if a, n, err := real.next(); a == nil {
				t.Fatalf("real child batch %d: %v %v", seq, n, err)
			}
			seq++
		}
		ackNext()
		for _, tc := range []struct {
			name, secret string
			header       bool
			want         string
		}{
			{"no token", "", false, "Unauthenticated"},
			{"wrong token", "lht_wrong", true, "Unauthenticated"},
			{"wrong token in the query", "lht_wrong", false, "Unauthenticated"},
			{"token of other sources", e.secrets["a-writer"], false, "PermissionDenied"},
		} {
			c := e.dialWS(tc.secret, tc.header)
			c.connect("victim-ws")
			c.sendBatch("victim-ws", 100, 5000)
			_, _, err := c.next()
			for err == nil { // the nack of the batch, then the close
				_, _, err = c.next()
			}
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, tc.want) {
				t.Errorf("%s: %v, want a policy violation close naming %s", tc.name, err, tc.want)
			}
			ackNext()
		}
		// The query parameter works for a valid token too, and a frame
		// naming another source is nacked.
		other := e.dialWS(e.secrets["a-writer"], false)
		other.connect("a-ws")
		other.sendBatch("victim-ws", 1, 9000)
		if _, n, err := other.next(); n == nil || n.Reason != codec.NackInvalidFormat || !strings.Contains(n.Message, "sourceDoId") {
			t.Fatalf("frame naming another source: %v %v", n, err)
		}
		ackNext()
		rows := e.flushAndRows()
		if want := int(seq-1) * 5; rows["victim-ws"] != want || len(rows) != 1 {
			t.Fatalf("stored rows %v, want victim-ws: %d only", rows, want)
		}
		e.checkNoSecretsLogged()
	})
}

// TestRevokedTokenClosesStreams removes a token from the file and reloads it
// (what SIGHUP and the file watch do): its open gRPC stream ends with
// Unauthenticated and its WebSocket is closed; other tokens keep working.
func TestRevokedTokenClosesStreams(t *testing.T) {
	e := startSecure(t, false, "")
	st, err := e.connect(e.cc, e.secrets["victim-writer"], "victim")
	if err != nil {
		t.Fatal(err)
	}
	if r := sendBatch(t, st, "victim", 1, 0); r.GetAck() == nil {
		t.Fatal(r)
	}
	ws := e.dialWS(e.secrets["victim-writer"], true)
	ws.connect("victim-ws")
	ws.sendBatch("victim-ws", 1, 0)
	if a, n, err := ws.next(); a == nil {
		t.Fatal(n, err)
	}
	keep, err := e.connect(e.cc, e.secrets["a-writer"], "a-1")
	if err != nil {
		t.Fatal(err)
	}

	writeTokenFile(t, e.tokensFile, e.secrets, "victim-writer")
	if err := e.store.Reload(); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("revoked gRPC stream ended with %v, want Unauthenticated", err)
			}
			break
		}
	}
	_, _, err = ws.next()
	for err == nil {
		_, _, err = ws.next()
	}
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("revoked WebSocket: %v, want a policy violation close", err)
	}
	if _, err := e.connect(e.cc, e.secrets["victim-writer"], "victim"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked token reconnecting: %v", err)
	}
	if r := sendBatch(t, keep, "a-1", 1, 0); r.GetAck() == nil {
		t.Fatalf("a stream of another token after the reload: %v", r)
	}
	e.checkNoSecretsLogged()
}

// TestAdminEndpointsNeedAdminToken: /status, /flush, /metrics, /debug/pprof,
// the status page and its /api/history need a token with the admin scope;
// /health never does.
func TestAdminEndpointsNeedAdminToken(t *testing.T) {
	e := startSecure(t, false, "")
	base := "http://" + e.a.httpAddr()
	get := func(method, path, secret string, query bool) int {
		t.Helper()
		u := base + path
		if query && secret != "" {
			u += "?token=" + secret
		}
		req, _ := http.NewRequestWithContext(t.Context(), method, u, nil)
		if !query && secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("GET", "/health", "", false); c != 200 {
		t.Errorf("/health without a token: %d", c)
	}
	for _, ep := range []struct{ method, path string }{
		{"GET", "/status"}, {"POST", "/flush"}, {"GET", "/metrics"}, {"GET", "/debug/pprof/"}, {"GET", "/"}, {"GET", "/api/history"},
	} {
		if c := get(ep.method, ep.path, "", false); c != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", ep.path, c)
		}
		if c := get(ep.method, ep.path, e.secrets["victim-writer"], false); c != http.StatusForbidden {
			t.Errorf("%s with a writer token: %d, want 403", ep.path, c)
		}
		for _, q := range []bool{false, true} {
			if c := get(ep.method, ep.path, e.secrets["ops"], q); c != http.StatusOK {
				t.Errorf("%s with the admin token (query %v): %d, want 200", ep.path, q, c)
			}
		}
	}
}

// TestTLSClientCertificates: with --tls-client-auth=require, a client with a
// certificate of the CA connects over gRPC and WSS; one without is refused at
// the handshake; a plaintext client fails cleanly (no hang) on both ports.
func TestTLSClientCertificates(t *testing.T) {
	e := startSecure(t, true, tlsconfig.ClientAuthRequire)
	if _, err := e.connect(e.cc, e.secrets["victim-writer"], "victim"); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	ws := e.dialWS(e.secrets["victim-writer"], true)
	ws.connect("victim-ws")
	ws.sendBatch("victim-ws", 1, 0)
	if a, n, err := ws.next(); a == nil {
		t.Fatalf("WSS with a client certificate: %v %v", n, err)
	}
	noCert := e.clientTLS.Clone()
	noCert.Certificates = nil
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := lakehousev1.NewCDCServiceClient(e.dial(noCert)).GetStatus(bearerCtx(ctx, e.secrets["ops"]), &lakehousev1.GetStatusRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("without a client certificate: %v, want Unavailable (handshake refused)", err)
	}
	_, err = lakehousev1.NewCDCServiceClient(e.dial(nil)).GetStatus(bearerCtx(ctx, e.secrets["ops"]), &lakehousev1.GetStatusRequest{})
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("plaintext gRPC client: %v, want Unavailable before the deadline", err)
	}
	resp, err := http.Get("http://" + e.a.httpAddr() + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plaintext HTTP got an answer from the TLS port")
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.clientTLS}}
	resp, err = hc.Get("https://" + e.a.httpAddr() + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTPS /health: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestGoClientTLSAndToken: the Go client streams over mTLS with WithTLS and
// WithToken; with a token of other sources Dial fails with PermissionDenied
// instead of retrying.
func TestGoClientTLSAndToken(t *testing.T) {
	e := startSecure(t, true, tlsconfig.ClientAuthRequire)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.a.grpcAddr(), "victim", client.WithTLS(e.clientTLS), client.WithToken(e.secrets["victim-writer"]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendBatch(ctx, workload.Entries(0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = client.Dial(ctx, e.a.grpcAddr(), "victim", client.WithTLS(e.clientTLS), client.WithToken(e.secrets["a-writer"]))
	if status.Code(err) != codes.PermissionDenied || ctx.Err() != nil {
		t.Fatalf("token of other sources: %v, want PermissionDenied at once", err)
	}
	if rows := e.flushAndRows(); rows["victim"] != 10 {
		t.Fatalf("rows %v", rows)
	}
}

// TestTokenRateLimit: a token's own rate limit applies to the sources
// written under it (rate_limited with a delay, nothing stored for the
// refused batch), and not to another token's sources.
func TestTokenRateLimit(t *testing.T) {
	e := startSecure(t, false, "")
	slow, err := e.connect(e.cc, e.secrets["slow-writer"], "slow-1")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := e.connect(e.cc, e.secrets["a-writer"], "a-1")
	if err != nil {
		t.Fatal(err)
	}
	// 50 entries/s, a second's burst: 10 batches of 5 go, the 11th waits.
	var limited *lakehousev1.Nack
	acked := 0
	for seq := uint64(1); seq <= 11 && limited == nil; seq++ {
		r := sendBatch(t, slow, "slow-1", seq, int64(seq*5))
		if n := r.GetNack(); n != nil {
			if n.GetReason() != lakehousev1.NackReason_NACK_REASON_RATE_LIMITED || n.GetRetryDelayMs() == 0 {
				t.Fatalf("batch %d: %v, want rate_limited with a delay", seq, n)
			}
			limited = n
			continue
		}
		acked++
	}
	if limited == nil || acked < 9 {
		t.Fatalf("acked %d batches of 5 entries under a 50 entries/s token, limited %v", acked, limited)
	}
	for seq := uint64(1); seq <= 20; seq++ {
		if r := sendBatch(t, fast, "a-1", seq, int64(seq*5)); r.GetAck() == nil {
			t.Fatalf("a token without a rate limit: batch %d got %v", seq, r)
		}
	}
	rows := e.flushAndRows()
	if rows["slow-1"] != acked*5 || rows["a-1"] != 100 {
		t.Fatalf("stored rows %v, want slow-1 %d and a-1 100", rows, acked*5)
	}
}
