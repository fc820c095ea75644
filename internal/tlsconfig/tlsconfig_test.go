package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig/tlstest"
)

// serveTLS accepts connections on a real socket with r's configuration and
// echoes one line back on each, until the test ends.
func serveTLS(t *testing.T, r *tlsconfig.Reloader) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(ln, r.Config())
	done := make(chan struct{})
	t.Cleanup(func() { _ = tl.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip handshakes and echoes four bytes; it returns the server's leaf.
func roundTrip(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func clientCfg(t *testing.T, c tlsconfig.Client) *tls.Config {
	t.Helper()
	cfg, err := c.Config("--tls")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestHandshakeWithAndWithoutClientCertificates(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	other := tlstest.NewCA(t, "other")
	srv := ca.Server(t, "server")
	good := ca.Client(t, "good-client")
	stranger := other.Client(t, "stranger")

	for _, tc := range []struct {
		mode       string
		noCert     bool // a client without a certificate connects
		strangerOK bool // a client holding a certificate from another CA connects
	}{
		{tlsconfig.ClientAuthNone, true, true},
		// Go's client sends no certificate the server's CA list rules
		// out, so the stranger connects as an anonymous client.
		{tlsconfig.ClientAuthRequest, true, true},
		{tlsconfig.ClientAuthRequire, false, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			r, err := tlsconfig.NewReloader(tlsconfig.Server{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.File, ClientAuth: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			addr := serveTLS(t, r)
			check := func(name string, c tlsconfig.Client, want bool) {
				cn, err := roundTrip(addr, clientCfg(t, c))
				if (err == nil) != want {
					t.Errorf("%s: err = %v, want success %v", name, err, want)
				}
				if err == nil && cn != "server" {
					t.Errorf("%s: server CN %q", name, cn)
				}
			}
			check("with the CA's client certificate", tlsconfig.Client{CAFile: ca.File, CertFile: good.CertFile, KeyFile: good.KeyFile}, true)
			check("without a client certificate", tlsconfig.Client{CAFile: ca.File}, tc.noCert)
			check("with another CA's client certificate", tlsconfig.Client{CAFile: ca.File, CertFile: stranger.CertFile, KeyFile: stranger.KeyFile}, tc.strangerOK)
		})
	}
}

func TestClientRefusesUnknownServer(t *testing.T) {
	ca, other := tlstest.NewCA(t, "root"), tlstest.NewCA(t, "other")
	srv := ca.Server(t, "server")
	r, err := tlsconfig.NewReloader(tlsconfig.Server{CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r)
	if _, err := roundTrip(addr, clientCfg(t, tlsconfig.Client{CAFile: other.File})); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
	if _, err := roundTrip(addr, clientCfg(t, tlsconfig.Client{CAFile: ca.File, ServerName: "not-the-server.example"})); err == nil {
		t.Fatal("a client expecting another server name connected")
	}
}

// A plaintext client gets a clean error (the server answers a TLS alert or
// closes), never a hang.
func TestPlaintextClientFailsCleanly(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	srv := ca.Server(t, "server")
	r, err := tlsconfig.NewReloader(tlsconfig.Server{CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, 1)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("plaintext client hung")
	}
	if n > 0 && buf[0] != 0x15 && !strings.HasPrefix(string(buf[:n]), "HTTP/1.0 400") { // 0x15: TLS alert record
		t.Fatalf("plaintext client got %q", buf[:n])
	}
}

func TestCertificateReloadWithoutRestart(t *testing.T) {
	ca := tlstest.NewCA(t, "root")
	dir := t.TempDir()
	certFile, keyFile := dir+"/cert.pem", dir+"/key.pem"
	ca.WriteServer(t, certFile, keyFile, "first")
	r, err := tlsconfig.NewReloader(tlsconfig.Server{CertFile: certFile, KeyFile: keyFile, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r)
	cfg := clientCfg(t, tlsconfig.Client{CAFile: ca.File})
	if cn, err := roundTrip(addr, cfg); err != nil || cn != "first" {
		t.Fatalf("before reload: %q, %v", cn, err)
	}
	ca.WriteServer(t, certFile, keyFile, "second")
	time.Sleep(5 * time.Millisecond) // past the poll interval
	if cn, err := roundTrip(addr, cfg); err != nil || cn != "second" {
		t.Fatalf("after the files changed: %q, %v", cn, err)
	}
	// A broken rewrite keeps the working certificate.
	if err := writeFile(keyFile, "not a key"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if cn, err := roundTrip(addr, cfg); err != nil || cn != "second" {
		t.Fatalf("after a broken rewrite: %q, %v", cn, err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a broken key succeeded")
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		cfg  tlsconfig.Server
		want string
	}{
		{tlsconfig.Server{CertFile: "c"}, "--tls-cert and --tls-key"},
		{tlsconfig.Server{CertFile: "c", KeyFile: "k", ClientAuth: "require"}, "--tls-client-ca"},
		{tlsconfig.Server{CertFile: "c", KeyFile: "k", ClientAuth: "maybe"}, "--tls-client-auth"},
		{tlsconfig.Server{ClientCAFile: "ca"}, "--tls-client-ca needs"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := tlsconfig.NewReloader(tlsconfig.Server{CertFile: "/nonexistent", KeyFile: "/nonexistent"}); err == nil {
		t.Fatal("missing files accepted")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
