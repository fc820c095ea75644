package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/iceberg-go/catalog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// dialAdmin connects to addr; opts (TLS, token) replace the default
// plaintext transport.
func dialAdmin(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, lakehousev1.CDCServiceClient, error) {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return cc, lakehousev1.NewCDCServiceClient(cc), nil
}

// stableJSON renders m as JSON indented by two spaces. protojson varies its
// whitespace on purpose (so nobody depends on it); re-indenting makes the
// output the same on every run, for diffs and scripts.
func stableJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", defaultGRPCAddr, "server gRPC address")
	var cf connFlags
	cf.register(fs, "tls")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dopts, err := cf.dialOptions()
	if err != nil {
		return err
	}
	cc, c, err := dialAdmin(*addr, dopts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := c.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
	if err != nil {
		return err
	}
	out, err := stableJSON(r.GetStatus())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(out))
	return nil
}

func runFlush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flush", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", defaultGRPCAddr, "server gRPC address")
	timeout := fs.Duration("timeout", defaultFlushTimeout, "how long to wait for the flush")
	var cf connFlags
	cf.register(fs, "tls")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dopts, err := cf.dialOptions()
	if err != nil {
		return err
	}
	cc, c, err := dialAdmin(*addr, dopts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := c.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
	if err != nil {
		return err
	}
	out, err := stableJSON(r.GetResult())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(out))
	if !r.GetResult().GetSuccess() {
		return fmt.Errorf("flush failed: %s", r.GetResult().GetError())
	}
	return nil
}

// openForRead opens the Iceberg sink of a data directory for scan, tables
// and maintain; maint, when set, is the maintenance configuration.
func openForRead(ctx context.Context, name string, args []string, stdout, stderr io.Writer, extra func(*flag.FlagSet), maint *maintFlags) (*iceberg.Sink, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	sf := sinkFlags{maint: maint}
	var cf coordFlags
	dataDir := fs.String("data-dir", "./data", "the server's data directory (embedded catalog and warehouse)")
	sf.registerCatalog(fs)
	if maint != nil { // maintain: mirror tables are maintained too
		sf.mirror = &mirrorFlags{}
		sf.mirror.register(fs, false)
		cf.registerMaintain(fs)
	}
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, nil, err
	}
	var err error
	if sf.exclusiveMaint, err = cf.exclusiveMaintenance(&sf); err != nil {
		return nil, nil, err
	}
	cfg, err := sf.icebergConfig(*dataDir, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return nil, nil, err
	}
	if err := sf.requireCatalog(*dataDir); err != nil {
		return nil, nil, err
	}
	s, err := iceberg.Open(ctx, cfg)
	return s, fs, err
}

func runScan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var table string
	var asJSON, mirror bool
	var limit int
	s, _, err := openForRead(ctx, "scan", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&table, "table", "", "CDC table name (as sent, or its sanitised Iceberg name); required")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object per row")
		fs.IntVar(&limit, "limit", 100, "print at most this many rows (0: all)")
		fs.BoolVar(&mirror, "mirror", false, "read the table's mirror (its current state, one row per key; written by serve unless --mirror=false) instead of its changelog")
	}, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	if table == "" {
		return fmt.Errorf("--table is required (see 'lakehouse tables')")
	}
	if mirror {
		return withTableHint(ctx, s, table, scanMirror(ctx, s, table, limit, asJSON, stdout))
	}
	recs, err := s.Scan(ctx, table, limit)
	if err != nil {
		return withTableHint(ctx, s, table, err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tBATCH\tENTRY\tOP\tEVENT_TIME\tROW_ID\tBEFORE\tAFTER")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.SourceID, r.BatchSeq, r.EntrySeq, r.Op,
			r.EventTime.UTC().Format(time.RFC3339Nano), r.RowID, clip(r.Before), clip(r.After))
	}
	return tw.Flush()
}

// maxTableHint bounds the table names a "no such table" error lists.
const maxTableHint = 10

// withTableHint adds to err, when it says that table does not exist, the
// tables that do: `bench` writes to bench_users, not users, and a user
// copying a command learns the name from the error.
func withTableHint(ctx context.Context, s *iceberg.Sink, table string, err error) error {
	if !errors.Is(err, catalog.ErrNoSuchTable) {
		return err
	}
	infos, terr := s.Tables(ctx)
	if terr != nil || len(infos) == 0 {
		return fmt.Errorf("%w (no CDC tables yet)", err)
	}
	var names, likely []string
	for _, t := range infos {
		names = append(names, t.OriginalName)
		if strings.HasSuffix(t.OriginalName, "_"+table) {
			likely = append(likely, t.OriginalName)
		}
	}
	hint := ""
	if len(likely) > 0 {
		hint = "; did you mean " + strings.Join(likely, " or ") + "?"
	}
	if len(names) > maxTableHint {
		names = append(names[:maxTableHint], fmt.Sprintf("and %d more", len(names)-maxTableHint))
	}
	return fmt.Errorf("%w%s (tables: %s; see 'lakehouse tables')", err, hint, strings.Join(names, ", "))
}

func clip(s *string) string {
	if s == nil {
		return "-"
	}
	if len(*s) > 60 {
		return (*s)[:57] + "..."
	}
	return *s
}

func runTables(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	s, _, err := openForRead(ctx, "tables", args, stdout, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	}, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	infos, err := s.Tables(ctx)
	if err != nil {
		return err
	}
	rows, err := withMirrors(ctx, s, infos)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tCDC NAME\tROWS\tSNAPSHOTS\tMIRROR")
	for _, t := range rows {
		m := t.Mirror
		if m == "" {
			m = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Name, t.OriginalName, t.Rows, t.Snapshots, m)
	}
	return tw.Flush()
}
