// Command lakehouse is the CDC aggregation service and its tools.
//
//	lakehouse serve     run the aggregator (gRPC, WebSocket bridge, ops endpoints)
//	lakehouse bridge    run the WebSocket bridge alone in front of a remote server
//	lakehouse status    print a server's status
//	lakehouse flush     ask a server to flush
//	lakehouse send      stream JSON-lines entries from stdin or a file
//	lakehouse bench     load a server with workload W1
//	lakehouse scan      print rows of an Iceberg table
//	lakehouse tables    list Iceberg tables
//	lakehouse maintain  run one table maintenance pass (expiry, compaction, orphan cleanup)
//	lakehouse replay    commit a dead instance's write-ahead log, then exit
//	lakehouse token     generate a bearer token for --auth-tokens
//	lakehouse demo      a first look: a server, native and legacy sources, the tables
//
// Every flag can also be set through the environment: --data-dir is
// LAKEHOUSE_DATA_DIR, --grpc-addr is LAKEHOUSE_GRPC_ADDR, and so on; a flag
// given on the command line wins. serve also reads a YAML file
// (--config lakehouse.yaml, keys are its flag names): flags > environment >
// file > defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	doc     string // more help text, printed by -h between the summary and the flags
}

func commands() map[string]command {
	return map[string]command{
		"serve":    {"run the aggregator with its embedded defaults", runServe, ""},
		"bridge":   {"run the WebSocket bridge alone in front of a remote server", runBridge, ""},
		"status":   {"print a server's status as JSON", runStatus, ""},
		"flush":    {"ask a server to flush now", runFlush, ""},
		"send":     {"stream JSON-lines entries from stdin or a file", runSend, sendInputDoc},
		"bench":    {"load a server with workload W1 and report throughput and latency", runBenchCmd, ""},
		"scan":     {"print rows of an Iceberg table", runScan, ""},
		"tables":   {"list Iceberg tables with row and snapshot counts", runTables, ""},
		"maintain": {"run one table maintenance pass: expire snapshots, compact, remove orphans", runMaintain, ""},
		"replay":   {"commit a dead instance's write-ahead log through the catalog, then exit", runReplay, replayDoc},
		"demo":     {"a first look: an in-process server, W1 from native and legacy sources, the tables and how to read them", runDemo, ""},
		"token":    {"generate a bearer token and the hash line of the token file", runToken, tokenDoc},
		"version":  {"print the version", runVersion, ""},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lakehouse <command> [flags]\n\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lakehouse <command> -h' for a command's flags. Every flag can also be set in the environment:\n--data-dir as LAKEHOUSE_DATA_DIR, and so on; the command line wins.")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stdout) // asked for: to stdout, so that it pipes into less
		return
	}
	cmd, ok := commands()[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "lakehouse: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "lakehouse %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
