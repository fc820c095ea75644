package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/tlsconfig"
)

// connFlags are the TLS and token flags of the commands that call a server
// (status, flush, send, bench) and of the bridge toward its upstream.
type connFlags struct {
	prefix    string // "tls" or "upstream"
	tls       tlsconfig.Client
	token     string
	tokenFile string
}

// register adds --<prefix>-ca, -cert, -key, -server-name, (--tls for the
// system roots) and --token, --token-file.
func (f *connFlags) register(fs *flag.FlagSet, prefix string) {
	f.prefix = prefix
	enable := prefix + "-tls"
	if prefix == "tls" {
		enable = "tls"
	}
	fs.BoolVar(&f.tls.Enable, enable, false, "connect with TLS, verifying the server against the system roots (implied by the other --"+prefix+"-* TLS flags)")
	fs.StringVar(&f.tls.CAFile, prefix+"-ca", "", "CA certificate file (PEM) to verify the server with; turns TLS on")
	fs.StringVar(&f.tls.CertFile, prefix+"-cert", "", "client certificate file (PEM) for mTLS, with --"+prefix+"-key")
	fs.StringVar(&f.tls.KeyFile, prefix+"-key", "", "private key file (PEM) of --"+prefix+"-cert")
	fs.StringVar(&f.tls.ServerName, prefix+"-server-name", "", "name expected in the server's certificate (default: the address's host)")
	fs.StringVar(&f.token, "token", "", "bearer token sent as 'authorization: Bearer <token>' (prefer --token-file or LAKEHOUSE_TOKEN: command lines are visible to other users)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (first line)")
}

// bearer returns the token to send, "" for none.
func (f *connFlags) bearer() (string, error) {
	if f.token != "" && f.tokenFile != "" {
		return "", errors.New("--token and --token-file are exclusive")
	}
	if f.tokenFile == "" {
		return f.token, nil
	}
	data, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok, _, _ := strings.Cut(string(data), "\n")
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", fmt.Errorf("--token-file %s: empty", f.tokenFile)
	}
	return tok, nil
}

// tlsConfig returns the TLS configuration, nil for plaintext.
func (f *connFlags) tlsConfig() (*tls.Config, error) {
	if !f.tls.Enabled() {
		return nil, nil
	}
	return f.tls.Config("--" + f.prefix)
}

// dialOptions are the gRPC dial options: transport credentials and the token.
func (f *connFlags) dialOptions() ([]grpc.DialOption, error) {
	cfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	tok, err := f.bearer()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.TokenCredentials(tok)))
	}
	return opts, nil
}

// clientOptions are the Go client's options for the same.
func (f *connFlags) clientOptions() ([]client.Option, error) {
	cfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	tok, err := f.bearer()
	if err != nil {
		return nil, err
	}
	var opts []client.Option
	if cfg != nil {
		opts = append(opts, client.WithTLS(cfg))
	}
	if tok != "" {
		opts = append(opts, client.WithToken(tok))
	}
	return opts, nil
}
