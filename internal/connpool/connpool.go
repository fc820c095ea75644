// Package connpool spreads gRPC calls over several client connections.
//
// One HTTP/2 connection carries all its streams through one reader and one
// writer goroutine on each side, which caps throughput well below what the
// server can take when many busy streams share it. The WebSocket bridge opens
// one upstream stream per legacy child, so it dials a small pool and spreads
// the streams over it.
package connpool

import (
	"context"
	"errors"
	"sync/atomic"

	"google.golang.org/grpc"
)

// Pool is a grpc.ClientConnInterface over several connections, chosen round
// robin per call.
type Pool struct {
	conns []*grpc.ClientConn
	next  atomic.Uint32
}

// Dial opens n connections to target with opts (n < 1 means 1).
func Dial(target string, n int, opts ...grpc.DialOption) (*Pool, error) {
	n = max(n, 1)
	p := &Pool{}
	for range n {
		cc, err := grpc.NewClient(target, opts...)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.conns = append(p.conns, cc)
	}
	return p, nil
}

func (p *Pool) pick() *grpc.ClientConn {
	return p.conns[int(p.next.Add(1)-1)%len(p.conns)]
}

// Invoke implements grpc.ClientConnInterface.
func (p *Pool) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return p.pick().Invoke(ctx, method, args, reply, opts...)
}

// NewStream implements grpc.ClientConnInterface.
func (p *Pool) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return p.pick().NewStream(ctx, desc, method, opts...)
}

// Close closes every connection.
func (p *Pool) Close() error {
	var errs []error
	for _, cc := range p.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
