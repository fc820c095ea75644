package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/testing/logbuf"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig/tlstest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// secEnv is an app with tokens (and TLS when asked) on real loopback
// sockets, and the secrets of its token file.
type secEnv struct {
	t          *testing.T
	a          *app
	dir        string
	tokensFile string
	store      *auth.Store
	tlsSrv     *tlsconfig.Reloader
	ca         *tlstest.CA
	clientTLS  *tls.Config // nil: plaintext
	secrets    map[string]string
	cc         *grpc.ClientConn
	logs       *logbuf.Buffer // every log of the app, at debug level
}

// checkNoSecretsLogged fails if any secret appears in the app's logs.
func (e *secEnv) checkNoSecretsLogged() {
	e.t.Helper()
	logs := e.logs.String()
	for name, s := range e.secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("the secret of %s was logged", name)
		}
	}
	if !strings.Contains(logs, "level=") {
		e.t.Error("no logs captured")
	}
}

// The token file of the tests: each writer may write its sources only.
var secTokens = []struct {
	name, sources, scopes string
	entriesPerSec         float64
}{
	{"victim-writer", "victim,victim-ws", "", 0},
	{"a-writer", "a-*", "flush", 0},
	{"status-reader", "", "status", 0},
	{"ops", "", "admin", 0},
	{"slow-writer", "slow-*", "", 50},
}

func writeTokenFile(t *testing.T, path string, secrets map[string]string, skip string) {
	t.Helper()
	var f auth.File
	for _, tk := range secTokens {
		if tk.name == skip {
			continue
		}
		f.Tokens = append(f.Tokens, auth.Entry{Name: tk.name, Hash: auth.Hash(secrets[tk.name]), Sources: splitList(tk.sources), Scopes: splitList(tk.scopes),
			EntriesPerSec: tk.entriesPerSec})
	}
	var b strings.Builder
	b.WriteString("tokens:\n")
	for _, e := range f.Tokens {
		fmt.Fprintf(&b, "  - name: %s\n    hash: %s\n", e.Name, e.Hash)
		if len(e.Sources) > 0 {
			fmt.Fprintf(&b, "    sources: [%s]\n", strings.Join(e.Sources, ", "))
		}
		if len(e.Scopes) > 0 {
			fmt.Fprintf(&b, "    scopes: [%s]\n", strings.Join(e.Scopes, ", "))
		}
		if e.EntriesPerSec > 0 {
			fmt.Fprintf(&b, "    entries_per_sec: %g\n", e.EntriesPerSec)
		}
	}
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// startSecure starts the app with tokens, and with TLS when tlsOn (client
// certificates per clientAuth).
func startSecure(t *testing.T, tlsOn bool, clientAuth string) *secEnv {
	t.Helper()
	e := &secEnv{t: t, dir: t.TempDir(), secrets: map[string]string{}}
	for _, tk := range secTokens {
		s, err := auth.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		e.secrets[tk.name] = s
	}
	e.tokensFile = filepath.Join(e.dir, "tokens.yaml")
	writeTokenFile(t, e.tokensFile, e.secrets, "")
	reg := prometheus.NewRegistry()
	e.logs = &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if e.store, err = auth.Open(e.tokensFile, log, reg); err != nil {
		t.Fatal(err)
	}
	cfg := testAppConfig(e.dir, "127.0.0.1:0")
	cfg.Metrics = reg
	cfg.Logger = log
	cfg.Server.Logger = log
	cfg.Auth = e.store
	tokenLimits(&cfg.Server.Limits) // as serve does with --auth-tokens
	cfg.StatusPage = true
	cfg.PProf = true
	if tlsOn {
		e.ca = tlstest.NewCA(t, "root")
		srv := e.ca.Server(t, "server")
		if e.tlsSrv, err = tlsconfig.NewReloader(tlsconfig.Server{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: e.ca.File, ClientAuth: clientAuth}); err != nil {
			t.Fatal(err)
		}
		cfg.TLS = e.tlsSrv.Config
		cl := e.ca.Client(t, "client")
		if e.clientTLS, err = (tlsconfig.Client{CAFile: e.ca.File, CertFile: cl.CertFile, KeyFile: cl.KeyFile}).Config("--tls"); err != nil {
			t.Fatal(err)
		}
	}
	if e.a, err = startApp(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.a.stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	e.cc = e.dial(e.clientTLS)
	return e
}

func (e *secEnv) dial(cfg *tls.Config) *grpc.ClientConn {
	e.t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	cc, err := grpc.NewClient(e.a.grpcAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cc.Close() })
	return cc
}

func bearerCtx(ctx context.Context, secret string) context.Context {
	if secret == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

type grpcStream = grpc.BidiStreamingClient[lakehousev1.StreamRequest, lakehousev1.StreamResponse]

// connect opens a stream for source with secret; the error is the stream's
// (its status) when the server refuses it.
func (e *secEnv) connect(cc *grpc.ClientConn, secret, source string) (grpcStream, error) {
	ctx, cancel := context.WithCancel(e.t.Context())
	e.t.Cleanup(cancel)
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(bearerCtx(ctx, secret))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	r, err := st.Recv()
	if err != nil {
		return nil, err
	}
	if r.GetConnected() == nil {
		return nil, fmt.Errorf("expected connected, got %v", r)
	}
	return st, nil
}

// sendBatch sends batch seq of source (entries from entry) whose embedded
// sourceDoId is frameSource, and returns the reply.
func sendBatch(t *testing.T, st grpcStream, frameSource string, seq uint64, entry int64) *lakehousev1.StreamResponse {
	t.Helper()
	f, err := codec.EncodeBatch(&codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, SourceID: []byte(frameSource),
		Entries: workload.Entries(entry, 5)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("batch %d: %v", seq, err)
		}
		if r.GetAck() != nil || r.GetNack() != nil {
			return r
		}
	}
}

// flushAndRows commits everything (as the admin) and returns the stored
// rows per source.
func (e *secEnv) flushAndRows() map[string]int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(bearerCtx(e.t.Context(), e.secrets["ops"]), time.Minute)
	defer cancel()
	if _, err := lakehousev1.NewCDCServiceClient(e.cc).Flush(ctx, &lakehousev1.FlushRequest{}); err != nil {
		e.t.Fatal(err)
	}
	recs, err := jsonl.ReadAll(filepath.Join(e.dir, "sink"))
	if err != nil {
		e.t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range recs {
		n[r.SourceID]++
	}
	return n
}

// wsChild is a legacy child's WebSocket through the embedded bridge.
type wsChild struct {
	t  *testing.T
	ws *websocket.Conn
}

// dialWS upgrades with the secret in the Authorization header (header) or
// the token query parameter.
func (e *secEnv) dialWS(secret string, header bool) *wsChild {
	e.t.Helper()
	scheme, hc := "ws", http.DefaultClient
	if e.clientTLS != nil {
		scheme = "wss"
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: e.clientTLS}}
	}
	u := scheme + "://" + e.a.httpAddr() + "/"
	h := http.Header{}
	switch {
	case secret == "":
	case header:
		h.Set("Authorization", "Bearer "+secret)
	default:
		u += "?token=" + secret
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h, HTTPClient: hc})
	if err != nil {
		e.t.Fatalf("websocket dial: %v", err)
	}
	e.t.Cleanup(func() { _ = ws.CloseNow() })
	return &wsChild{t: e.t, ws: ws}
}

func (c *wsChild) connect(source string) {
	c.t.Helper()
	data, _ := json.Marshal(codec.ConnectMessage{Type: "connect", Timestamp: time.Now().UnixMilli(), SourceDoID: source, ProtocolVersion: 1})
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, data); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsChild) sendBatch(frameSource string, seq uint64, entry int64) {
	c.t.Helper()
	f, err := codec.EncodeBatch(&codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, SourceID: []byte(frameSource),
		Entries: workload.Entries(entry, 5)})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, f); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next ack or nack (skipping JSON status messages), or the
// error that ended the socket.
func (c *wsChild) next() (*codec.Ack, *codec.Nack, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 15*time.Second)
	defer cancel()
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return nil, nil, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		h, err := codec.ReadHeader(data)
		if err != nil {
			return nil, nil, err
		}
		if h.Type == codec.TypeAck {
			a, err := codec.DecodeAck(data)
			return a, nil, err
		}
		n, err := codec.DecodeNack(data)
		return nil, n, err
	}
}
