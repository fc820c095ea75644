package server_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/dirlock"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
	"github.com/dot-do/lakehouse-rpc/sink/jsonl"
)

// TestDataDirLocked checks that a second server on a running server's data
// directory fails to start, and that stopping the first releases it.
func TestDataDirLocked(t *testing.T) {
	in := servertest.Start(t)
	js, err := jsonl.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: in.DataDir, Sink: js, NoSync: true}
	if srv, err := server.New(context.Background(), cfg); !errors.Is(err, dirlock.ErrLocked) {
		if srv != nil {
			srv.Close()
		}
		t.Fatalf("second server on one data dir: %v, want ErrLocked", err)
	}
	in.Crash()
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("server after the first stopped: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}
