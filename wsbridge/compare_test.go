package wsbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/connpool"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/server"
)

// BenchmarkLegacyVsNativeW1 streams W1 from 8 children into a real server
// with durable (fsync'd) acks, once as native gRPC sources and once as
// legacy WebSocket children through the bridge, so the two paths compare in
// one run. Flushing is off: this measures the ingest path, not the sink.
// b.N is the number of 1,000-entry batches, split over the children.
//
//	go test -run '^$' -bench LegacyVsNative -benchtime 800x ./wsbridge
func BenchmarkLegacyVsNativeW1(b *testing.B) {
	const children, window = 8, 16
	for _, path := range []string{"native", "legacy"} {
		b.Run(path, func(b *testing.B) {
			in := servertest.Start(b, servertest.WithSync(), servertest.WithConfig(func(c *server.Config) {
				c.MaxBufferBytes, c.WALMaxBytes = 16<<30, 16<<30
				c.FlushInterval, c.FlushAge = time.Hour, time.Hour
				c.FlushEntries, c.FlushBytes, c.PressureThreshold = 1<<40, 1<<40, 2
			}))
			per := (b.N + children - 1) / children
			frames := make([][][]byte, children)
			for i := range frames {
				src := fmt.Sprintf("%s-%d", path, i)
				for seq := 1; seq <= per; seq++ {
					bt := workload.Batch(src, uint64(seq))
					bt.CorrelationID = []byte(fmt.Sprintf("c-%d", seq))
					f, err := codec.EncodeBatch(bt)
					if err != nil {
						b.Fatal(err)
					}
					frames[i] = append(frames[i], f)
				}
			}
			b.SetBytes(int64(len(frames[0][0])))
			var env *testEnv
			if path == "legacy" {
				cc, err := connpool.Dial(in.Addr, 4, grpc.WithTransportCredentials(insecure.NewCredentials()),
					server.GRPCCallLimits())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
				env = newEnv(b, cc, nil)
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, children)
			for i := range children {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var err error
					if path == "native" {
						err = nativeChild(in.Addr, fmt.Sprintf("native-%d", i), frames[i], window)
					} else {
						err = legacyChildRaw(env, fmt.Sprintf("legacy-%d", i), frames[i], window)
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(per*children*workload.W1BatchSize)/time.Since(start).Seconds(), "entries/s")
		})
	}
}

// nativeChild sends frames on one gRPC stream with window batches in flight.
func nativeChild(addr, source string, frames [][]byte, window int) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	st, err := lakehousev1.NewCDCServiceClient(cc).Stream(context.Background())
	if err != nil {
		return err
	}
	if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_Connect{Connect: &lakehousev1.ConnectRequest{SourceId: source}}}); err != nil {
		return err
	}
	if _, err := st.Recv(); err != nil {
		return err
	}
	sem := make(chan struct{}, window)
	done := make(chan error, 1)
	go func() {
		for n := 0; n < len(frames); {
			r, err := st.Recv()
			if err != nil {
				done <- err
				return
			}
			if a := r.GetAck(); a != nil {
				if a.Status != lakehousev1.AckStatus_ACK_STATUS_OK && a.Status != lakehousev1.AckStatus_ACK_STATUS_BUFFERED {
					done <- fmt.Errorf("%s: ack %v", source, a)
					return
				}
				n++
				<-sem
			} else if nk := r.GetNack(); nk != nil {
				done <- fmt.Errorf("%s: nack %v", source, nk)
				return
			}
		}
		done <- nil
	}()
	for _, f := range frames {
		sem <- struct{}{}
		if err := st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}); err != nil {
			return err
		}
	}
	err = <-done
	st.CloseSend()
	return err
}

// legacyChildRaw does the same over a WebSocket to the bridge, as a legacy
// child would: JSON connect, binary batches with correlation ids, binary acks.
func legacyChildRaw(env *testEnv, source string, frames [][]byte, window int) error {
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, env.wsURL, nil)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	msg, err := json.Marshal(connectMsg(source, ""))
	if err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
		return err
	}
	if _, _, err := c.Read(ctx); err != nil { // status
		return err
	}
	sem := make(chan struct{}, window)
	done := make(chan error, 1)
	go func() {
		for n := 0; n < len(frames); {
			typ, data, err := c.Read(ctx)
			if err != nil {
				done <- err
				return
			}
			if typ != websocket.MessageBinary {
				continue
			}
			a, err := codec.DecodeAck(data)
			if err != nil {
				done <- fmt.Errorf("%s: not an ack: %v", source, err)
				return
			}
			if a.Status != codec.AckOK && a.Status != codec.AckBuffered {
				done <- fmt.Errorf("%s: ack status %v", source, a.Status)
				return
			}
			n++
			<-sem
		}
		done <- nil
	}()
	for _, f := range frames {
		sem <- struct{}{}
		if err := c.Write(ctx, websocket.MessageBinary, f); err != nil {
			return err
		}
	}
	return <-done
}
