package server_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// stalledSink is a sink whose storage never answers: every call waits for
// its context, as a call to a paused object store does.
type stalledSink struct{}

func (stalledSink) Commit(ctx context.Context, _ *sink.Flush) (sink.Result, error) {
	<-ctx.Done()
	return sink.Result{}, ctx.Err()
}

func (stalledSink) Watermarks(ctx context.Context) (map[string]sink.Watermark, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (stalledSink) Close() error { return nil }

// TestStartOnStalledSinkFails: reading the sink's watermarks at start-up is
// bounded by the commit timeout, so a start on a stalled store fails with
// an error instead of hanging.
func TestStartOnStalledSinkFails(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		s, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), Sink: stalledSink{},
			CommitTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "watermarks") {
			t.Fatalf("start on a stalled sink: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("start on a stalled sink still running after 10 s")
	}
}

func TestCommitTimeoutValidated(t *testing.T) {
	_, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), Sink: stalledSink{},
		CommitTimeout: -time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "CommitTimeout") {
		t.Fatalf("negative commit timeout: %v", err)
	}
}
