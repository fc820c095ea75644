package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig/tlstest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// secureServer is the TLS (mTLS required) and token configuration of a
// server process and the matching client side.
type secureServer struct {
	ca         *tlstest.CA
	certFile   string
	keyFile    string
	tokensFile string
	writer     string // secret of a token for the sources glob
	admin      string // secret of an admin token
	clientTLS  *tls.Config
	args       []string          // serve's flags
	dopts      []grpc.DialOption // a writer's dial options
	sources    string            // the writer token's glob
}

func newSecureServer(t *testing.T, sources string) *secureServer {
	t.Helper()
	s := &secureServer{ca: tlstest.NewCA(t, "root")}
	dir := t.TempDir()
	s.certFile, s.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	s.ca.WriteServer(t, s.certFile, s.keyFile, "server-1")
	cl := s.ca.Client(t, "client")
	var err error
	if s.clientTLS, err = (tlsconfig.Client{CAFile: s.ca.File, CertFile: cl.CertFile, KeyFile: cl.KeyFile}).Config("--tls"); err != nil {
		t.Fatal(err)
	}
	s.writer, _ = auth.NewSecret()
	s.admin, _ = auth.NewSecret()
	s.tokensFile = filepath.Join(dir, "tokens.json")
	s.args = []string{"--tls-cert", s.certFile, "--tls-key", s.keyFile, "--tls-client-ca", s.ca.File, "--tls-client-auth", "require",
		"--auth-tokens", s.tokensFile}
	s.dopts = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(s.clientTLS)), grpc.WithPerRPCCredentials(auth.TokenCredentials(s.writer))}
	s.sources = sources
	s.writeTokens(t, true)
	return s
}

// writeTokens writes the token file (JSON), with the writer's token or
// without it (revoked).
func (s *secureServer) writeTokens(t *testing.T, withWriter bool) {
	t.Helper()
	type entry struct {
		Name    string   `json:"name"`
		Hash    string   `json:"hash"`
		Sources []string `json:"sources,omitempty"`
		Scopes  []string `json:"scopes,omitempty"`
	}
	f := struct {
		Tokens []entry `json:"tokens"`
	}{Tokens: []entry{{Name: "ops", Hash: auth.Hash(s.admin), Scopes: []string{"admin"}}}}
	if withWriter {
		f.Tokens = append(f.Tokens, entry{Name: "writer", Hash: auth.Hash(s.writer), Sources: []string{s.sources}})
	}
	data, _ := json.Marshal(f)
	if err := os.WriteFile(s.tokensFile+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.tokensFile+".tmp", s.tokensFile); err != nil {
		t.Fatal(err)
	}
}

// TestSecureServerProcess runs `lakehouse serve` with mTLS and tokens:
// a writer streams; its token is removed from the file, and the file watch
// closes its stream with Unauthenticated; a new certificate is installed and
// SIGHUP makes new handshakes use it, without a restart.
func TestSecureServerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	sec := newSecureServer(t, "proc-*")
	dir := t.TempDir()
	addr, logPath := freeAddr(t), filepath.Join(dir, "server.log")
	args := append([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr, "--http-addr", "",
		"--sink", "jsonl", "--log-level", "info"}, sec.args...)
	p := startProcDial(t, sec.dopts, []string{"LAKEHOUSE_TEST_TOKEN_POLL=100ms"}, addr, logPath, args...)

	cc, err := grpc.NewClient(addr, sec.dopts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: "proc-1"}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetConnected() == nil {
		t.Fatalf("connect: %v %v", r, err)
	}
	sec.writeTokens(t, false)
	for {
		_, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("revoked stream: %v, want Unauthenticated\n%s", err, readLog(t, logPath))
			}
			break
		}
	}

	// Certificate rotation: SIGHUP.
	if runtime.GOOS == "windows" {
		return
	}
	serverCN := func() string {
		c, err := tls.Dial("tcp", addr, sec.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := serverCN(); cn != "server-1" {
		t.Fatalf("certificate %q", cn)
	}
	sec.ca.WriteServer(t, sec.certFile, sec.keyFile, "server-2")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for serverCN() != "server-2" {
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate was not served after SIGHUP\n%s", readLog(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !p.alive() {
		t.Fatal("the server exited")
	}
	if logs := readLog(t, logPath); strings.Contains(logs, sec.writer) || strings.Contains(logs, sec.admin) {
		t.Fatal("a secret reached the log")
	}
}

// TestStandaloneBridgeTokens runs `lakehouse bridge` in front of a TLS and
// token server: a child's own token (query parameter) is forwarded upstream;
// a child without one is refused, unless the bridge has its own --token and
// the source is in --allow-sources.
func TestStandaloneBridgeTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real server processes")
	}
	sec := newSecureServer(t, "child-*")
	dir := t.TempDir()
	addr, logPath := freeAddr(t), filepath.Join(dir, "server.log")
	startProcDial(t, sec.dopts, nil, addr, logPath, append([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", addr,
		"--http-addr", "", "--sink", "jsonl"}, sec.args...)...)
	cl := sec.ca.Client(t, "bridge")
	upstream := []string{"bridge", "--upstream", addr, "--upstream-ca", sec.ca.File, "--upstream-cert", cl.CertFile, "--upstream-key", cl.KeyFile}

	forwarding := startBridge(t, filepath.Join(dir, "bridge1.log"), upstream...)
	if err := childBatch(t, forwarding, "child-1", sec.writer); err != nil {
		t.Errorf("child with its own token: %v", err)
	}
	if err := childBatch(t, forwarding, "child-2", ""); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("child without a token: %v, want a policy violation close", err)
	}

	tokenFile := filepath.Join(dir, "bridge-token")
	if err := os.WriteFile(tokenFile, []byte(sec.writer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lending := startBridge(t, filepath.Join(dir, "bridge2.log"), append(upstream, "--token-file", tokenFile, "--allow-sources", "child-3,child-4*")...)
	if err := childBatch(t, lending, "child-3", ""); err != nil {
		t.Errorf("allowed child without a token: %v", err)
	}
	if err := childBatch(t, lending, "child-5", ""); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("child outside --allow-sources: %v, want a policy violation close", err)
	}
}

// startBridge runs `lakehouse bridge` and returns its HTTP address once
// /health answers.
func startBridge(t *testing.T, logPath string, args ...string) string {
	t.Helper()
	httpAddr := freeAddr(t)
	startProc(t, "", logPath, append(args, "--http-addr", httpAddr)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/health")
		if err == nil {
			resp.Body.Close()
			return httpAddr
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge never answered: %v\n%s", err, readLog(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childBatch connects a legacy child as source (token in the query when
// set), sends one batch and returns nil on its ack, or the error that ended
// the socket.
func childBatch(t *testing.T, httpAddr, source, token string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	u := "ws://" + httpAddr + "/"
	if token != "" {
		u += "?token=" + token
	}
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	conn, _ := json.Marshal(codec.ConnectMessage{Type: "connect", Timestamp: time.Now().UnixMilli(), SourceDoID: source, ProtocolVersion: 1})
	if err := ws.Write(ctx, websocket.MessageText, conn); err != nil {
		return err
	}
	f, err := codec.EncodeBatch(&codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: 1, SourceID: []byte(source), Entries: workload.Entries(0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, f); err != nil {
		return err
	}
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		if h, _ := codec.ReadHeader(data); h.Type == codec.TypeAck {
			return nil
		}
		n, _ := codec.DecodeNack(data)
		t.Logf("%s: nack %+v", source, n)
	}
}
