package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/testing/logbuf"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// heldSink holds every commit with rows until release is closed (or the
// commit's context ends): storage that stopped answering.
type heldSink struct {
	sink.Sink
	release chan struct{}
}

func (s heldSink) Commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	rows := 0
	for _, t := range f.Tables {
		rows += len(t.Rows)
	}
	if rows > 0 {
		select {
		case <-s.release:
		case <-ctx.Done():
			return sink.Result{}, ctx.Err()
		}
	}
	return s.Sink.Commit(ctx, f)
}

// TestBenchCPULineWhenTheFinalFlushFails: the flush after the run times out
// (storage holds the commit past --flush-timeout). The run's figures and its CPU
// line are still printed, with the error named; before, the summary said
// "1 errors" and left the CPU line out.
func TestBenchCPULineWhenTheFinalFlushFails(t *testing.T) {
	in := servertest.Start(t)
	release := make(chan struct{})
	in.WrapSink(func(s sink.Sink) sink.Sink { return heldSink{Sink: s, release: release} })
	in.Restart()
	t.Cleanup(func() { close(release) }) // before in.Stop (cleanups run last first)
	inProcess := func(context.Context, bool) (string, func() error, error) {
		return in.Addr, func() error { return nil }, nil
	}
	var out, errb bytes.Buffer
	if err := runBench(t.Context(), []string{"--entries", "2000", "--frames", "--progress", "0", "--flush-timeout", "1s"}, &out, &errb, inProcess); err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	got := out.String()
	t.Log(got)
	for _, want := range []string{"2000 entries", "1 errors (first: flush after the run:", "server CPU", "the flush after the run failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q: %s", want, got)
		}
	}
}

// TestBenchFinalFlushOutlastsGrace: the commit after the run takes longer
// than --grace (the wait for acks), as committing a 10-s run's backlog took
// 40 s on a slow machine: bench waits for it (up to --flush-timeout) and
// reports no error. Before, the flush was bounded by --grace and failed.
func TestBenchFinalFlushOutlastsGrace(t *testing.T) {
	in := servertest.Start(t)
	release := make(chan struct{})
	in.WrapSink(func(s sink.Sink) sink.Sink { return heldSink{Sink: s, release: release} })
	in.Restart()
	inProcess := func(context.Context, bool) (string, func() error, error) {
		return in.Addr, func() error { return nil }, nil
	}
	var (
		out  bytes.Buffer
		errb logbuf.Buffer
	)
	done := make(chan error, 1)
	go func() {
		done <- runBench(t.Context(), []string{"--entries", "2000", "--frames", "--progress", "0", "--grace", "1s"}, &out, &errb, inProcess)
	}()
	// Hold the commit until bench waits for it, and well past --grace.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errb.String(), "commits what the run left buffered") {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("bench never waited for the final commit: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	got := out.String()
	t.Log(got, errb.String())
	if strings.Contains(got, "errors") || strings.Contains(got, "flush after the run failed") {
		t.Errorf("the final commit, longer than --grace, failed the run: %s", got)
	}
	if !strings.Contains(errb.String(), "bench: committed in") {
		t.Errorf("stderr does not say the commit ended: %s", errb.String())
	}
}
