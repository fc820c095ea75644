package auth

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// TokenCredentials returns gRPC per-call credentials that send token as
// "authorization: Bearer <token>". They work over plaintext too (the server
// may run tokens without TLS on loopback); use TLS elsewhere.
func TokenCredentials(token string) credentials.PerRPCCredentials {
	return tokenCreds("Bearer " + token)
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }
