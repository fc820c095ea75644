package tlsconfig

import (
	"crypto/tls"
	"fmt"
)

// Client describes a client's TLS toward a server: the CA to verify it with
// (system roots when empty), an optional client certificate (mTLS) and the
// name expected in the server's certificate.
type Client struct {
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
	// Enable turns TLS on with system roots when no other field is set.
	Enable bool
}

// Enabled reports whether the client uses TLS.
func (c Client) Enabled() bool {
	return c.Enable || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
}

// Config builds the client's tls.Config; flag is the flag prefix used in
// errors ("--tls" gives --tls-ca, --tls-cert...).
func (c Client) Config(flag string) (*tls.Config, error) {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("%s-cert and %s-key go together", flag, flag)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s-ca: %w", flag, err)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s-cert/%s-key: %w", flag, flag, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
