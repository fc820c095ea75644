package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Methods and what they need. Anything not listed needs the admin scope.
const (
	methodStream    = "/lakehouse.v1.CDCService/Stream"
	methodFlush     = "/lakehouse.v1.CDCService/Flush"
	methodGetStatus = "/lakehouse.v1.CDCService/GetStatus"
	healthPrefix    = "/grpc.health.v1.Health/"
	reflectPrefix   = "/grpc.reflection."
)

// ServerOptions returns the interceptors that check tokens on every gRPC
// call. Put them before any interceptor that reads FromContext.
func (s *Store) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.stream),
	}
}

// authorize authenticates a call's metadata and checks the scope its method
// needs. Health checks need no token.
func (s *Store) authorize(ctx context.Context, method string) (Principal, bool, error) {
	if strings.HasPrefix(method, healthPrefix) {
		return Principal{}, false, nil
	}
	var auth string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			auth = v[0]
		}
	}
	p, err := s.Authenticate(auth)
	if err != nil {
		s.refused.WithLabelValues("unauthenticated").Inc()
		return p, false, status.Error(codes.Unauthenticated, err.Error())
	}
	var need string
	switch {
	case method == methodStream, strings.HasPrefix(method, reflectPrefix):
	case method == methodFlush:
		need = ScopeFlush
	case method == methodGetStatus:
		need = ScopeStatus
	default:
		need = ScopeAdmin
	}
	if need != "" && !p.Has(need) {
		s.refused.WithLabelValues("permission_denied").Inc()
		return p, false, status.Errorf(codes.PermissionDenied, "token %q lacks the %s scope", p.Name, need)
	}
	return p, true, nil
}

func (s *Store) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	p, ok, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if ok {
		ctx = NewContext(ctx, p)
	}
	return h(ctx, req)
}

func (s *Store) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	p, ok, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if !ok {
		return h(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(NewContext(ss.Context(), p))
	defer cancel(nil)
	w := &authStream{ServerStream: ss, ctx: ctx, store: s, p: p}
	if info.FullMethod == methodStream {
		w.t = s.track(p, cancel)
		defer s.untrack(w.t)
	}
	err = h(srv, w)
	if errors.Is(context.Cause(ctx), errRevoked) {
		return status.Errorf(codes.Unauthenticated, "token %q was revoked", p.Name)
	}
	return err
}

// authStream checks the source of a CDC stream's connect before the server
// sees it: a refused stream never reaches the server's source registration,
// so it cannot fence the source's real stream.
type authStream struct {
	grpc.ServerStream
	ctx       context.Context
	store     *Store
	p         Principal
	t         *tracked // nil for streams other than Stream
	connected bool
}

func (w *authStream) Context() context.Context { return w.ctx }

func (w *authStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if w.t == nil || w.connected {
		return nil
	}
	w.connected = true
	req, ok := m.(*lakehousev1.StreamRequest)
	if !ok || req.GetConnect() == nil {
		return nil // the server refuses a stream that does not start with connect
	}
	source := req.GetConnect().GetSourceId()
	switch err := w.store.bind(w.t, source); {
	case errors.Is(err, errRevoked):
		w.store.refused.WithLabelValues("revoked").Inc()
		return status.Errorf(codes.Unauthenticated, "token %q was revoked", w.p.Name)
	case err != nil:
		w.store.refused.WithLabelValues("permission_denied").Inc()
		return status.Errorf(codes.PermissionDenied, "token %q may not write source %q", w.p.Name, source)
	}
	return nil
}
