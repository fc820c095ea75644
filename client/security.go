package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// WithTLS makes Dial connect with TLS using cfg (its RootCAs verify the
// server, its Certificates are the client's for mTLS). A nil cfg uses the
// system roots.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.dialOptions = append(c.dialOptions, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
}

// WithToken sends token as "authorization: Bearer <token>" on the client's
// stream and calls (Dial and New alike). The server refuses a stream whose
// token may not write the client's source with PermissionDenied, which the
// client treats as permanent. Send tokens over TLS except on loopback.
func WithToken(token string) Option {
	return func(c *config) { c.token = token }
}

// validateToken is part of newConfig's checks.
func validateToken(t string) error {
	if strings.ContainsAny(t, " \t\r\n") {
		return fmt.Errorf("%w: WithToken: the token contains white space", ErrInvalidOption)
	}
	return nil
}

// tokenConn adds the bearer token to every call made through a connection.
type tokenConn struct {
	grpc.ClientConnInterface
	auth string
}

func withTokenConn(conn grpc.ClientConnInterface, token string) grpc.ClientConnInterface {
	if token == "" {
		return conn
	}
	return tokenConn{conn, "Bearer " + token}
}

func (t tokenConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return t.ClientConnInterface.Invoke(metadata.AppendToOutgoingContext(ctx, "authorization", t.auth), method, args, reply, opts...)
}

func (t tokenConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return t.ClientConnInterface.NewStream(metadata.AppendToOutgoingContext(ctx, "authorization", t.auth), desc, method, opts...)
}
