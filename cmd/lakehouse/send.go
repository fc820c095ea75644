package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/client"
	"github.com/dot-do/lakehouse-rpc/codec"
)

// sendInputDoc documents send's input; printed by send -h.
const sendInputDoc = `
Input: one JSON object per line (blank lines are skipped), one CDC entry each.
Field names are the legacy protocol's camelCase or the proto's snake_case /
JSON names:

  sequence                      entry sequence, > 0, increasing        required
  timestamp | timestamp_ms | timestampMs
                                ms since the Unix epoch                 required
  operation                     INSERT, UPDATE or DELETE (OPERATION_*)  required
  table                         CDC table name                          required
  rowId | row_id                the row's id                            required
  before                        the old row, any JSON value (UPDATE, DELETE)
  after                         the new row, any JSON value (INSERT, UPDATE)

before/after are stored as the JSON text given. Unknown fields, missing
required fields and malformed lines stop send with the line number.
Example:
  {"sequence":1,"timestamp":1764547200001,"operation":"INSERT","table":"users","rowId":"u1","after":{"id":"u1"}}`

// runSend implements `lakehouse send`: it streams JSON-lines WAL entries
// ({"sequence":..,"timestamp":..,"operation":"INSERT","table":..,"rowId":..,
// "before":{..},"after":{..}}) from --file or stdin to the server as source
// --source, printing every ack, nack and error, and exits once everything is
// acknowledged.
func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return sendCommand(ctx, args, os.Stdin, stdout, stderr)
}

func sendCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", defaultGRPCAddr, "server gRPC address")
	source := fs.String("source", "", "source id (required)")
	shard := fs.String("shard", "", "shard name stored with every row")
	file := fs.String("file", "", "JSON-lines file (default: stdin)")
	batch := fs.Int("batch", client.DefaultMaxBatchEntries, "entries per batch")
	batchTimeout := fs.Duration("batch-timeout", client.DefaultBatchTimeout, "send a partial batch after this long")
	persisted := fs.Bool("wait-persisted", false, "wait until the entries are committed to Iceberg")
	structured := fs.Bool("structured", false, "send structured protobuf batches instead of binary frames")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the acks at the end")
	quiet := fs.Bool("quiet", false, "print only the summary, not every ack")
	var cf connFlags
	cf.register(fs, "tls")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dopts, err := cf.dialOptions()
	if err != nil {
		return err
	}
	secOpts, err := cf.clientOptions()
	if err != nil {
		return err
	}
	if *source == "" {
		return errors.New("--source is required")
	}
	in := stdin
	if *file != "" && *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	var mu sync.Mutex
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, format, a...)
	}
	mode := client.ModeBinary
	if *structured {
		mode = client.ModeStructured
	}
	opts := []client.Option{
		client.WithShardName(*shard),
		client.WithMaxBatchEntries(*batch),
		client.WithBatchTimeout(*batchTimeout),
		client.WithWaitForPersisted(*persisted),
		client.WithMode(mode),
		client.OnNack(func(n client.Nack) {
			if !n.Stale {
				printf("nack seq=%d reason=%s retry_in=%s %s\n", n.Sequence, client.NackReasonName(n.Reason), n.RetryDelay, n.Message)
			}
		}),
		client.OnError(func(err error) { printf("error: %v\n", err) }),
		client.OnPersisted(func(p client.Persisted) { printf("persisted seq=%d entry_seq=%d\n", p.Sequence, p.EntrySequence) }),
	}
	if !*quiet {
		opts = append(opts, client.OnAck(func(a client.Ack) {
			printf("ack seq=%d status=%s entries=%d latency=%s\n", a.Sequence, a.Status, a.Entries, a.Latency.Round(time.Microsecond))
		}))
	}
	opts = append(opts, secOpts...)
	if err := checkReachable(ctx, *addr, dopts...); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := client.Dial(dctx, *addr, *source, opts...)
	cancel()
	if err != nil {
		return err
	}
	readErr := sendLines(ctx, c, in)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *timeout)
	defer cancel()
	closeErr := c.Close(cctx)
	st := c.Stats()
	printf("sent %d entries in %d batches: %d acked (%d duplicate batches), %d failed, %d retransmissions\n",
		st.EntriesSent, st.BatchesSent, st.EntriesAcked, st.Duplicates, st.EntriesFailed, st.BatchesRetried)
	return errors.Join(readErr, closeErr)
}

// sendLines sends every JSON line of in as one entry.
func sendLines(ctx context.Context, c *client.Client, in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), codec.MaxMessageSize)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		e, err := parseSendLine(b)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := c.Send(ctx, e); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading input: %w", err)
	}
	return nil
}
