package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"google.golang.org/grpc"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Mirror freshness: how long a change takes to become visible in its mirror
// table to an outside reader. A probe source sends one marker row at a time
// (a new key each, in a table of its own) while the load runs, and a poller
// loads the mirror table through the catalog every PollInterval and scans
// its row_id column: a marker's delay runs from just before its batch was
// sent to the first poll that saw it. The poll interval (and a scan's
// time) is the measurement's resolution.

// Defaults of FreshnessConfig.
const (
	DefaultMarkerInterval = 250 * time.Millisecond
	DefaultPollInterval   = 50 * time.Millisecond
	// FreshnessSource is the probe's source id.
	FreshnessSource = "freshness-probe"
	// FreshnessTable is the probe's table name (after Config.TablePrefix).
	FreshnessTable = "freshness"
)

// FreshnessConfig configures a freshness probe.
type FreshnessConfig struct {
	Addr        string
	DialOptions []grpc.DialOption
	// Table is the CDC table the markers go to.
	Table string
	// LoadMirror loads the table's mirror table afresh through the
	// catalog (an outside reader's view).
	LoadMirror func(ctx context.Context) (*table.Table, error)
	// MarkerInterval is the time between markers (the next is sent once
	// the previous is acknowledged and this has passed).
	MarkerInterval time.Duration
	// PollInterval is the time between polls of the mirror table.
	PollInterval time.Duration
	// Grace bounds the wait for the last markers after the run.
	Grace time.Duration
}

// FreshnessReport is what a probe measured.
type FreshnessReport struct {
	Markers int `json:"markers"` // sent and acknowledged
	Seen    int `json:"seen"`    // visible in the mirror before the end
	// Visibility delay percentiles, in ms, of the markers seen.
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
	// PollMs is the poll interval: the delays' resolution.
	PollMs     float64 `json:"pollMs"`
	Polls      int     `json:"polls"`
	PollErrors int     `json:"pollErrors"` // polls that failed (retried at the next)
	// LastPollError is the last failed poll's error.
	LastPollError string `json:"lastPollError,omitempty"`
}

// String is the report's summary line; failed polls name the last error.
func (r *FreshnessReport) String() string {
	s := fmt.Sprintf("mirror freshness: %d markers, %d seen, visible after p50 %.0fms p99 %.0fms max %.0fms (polled every %.0fms, %d polls, %d failed)",
		r.Markers, r.Seen, r.P50Ms, r.P99Ms, r.MaxMs, r.PollMs, r.Polls, r.PollErrors)
	if r.PollErrors > 0 && r.LastPollError != "" {
		s += "; last poll error: " + r.LastPollError
	}
	return s
}

// ProbeFreshness sends markers until ctx ends, then waits up to Grace for
// the markers not seen yet, and reports the delays.
func ProbeFreshness(ctx context.Context, cfg FreshnessConfig) (*FreshnessReport, error) {
	if cfg.MarkerInterval <= 0 {
		cfg.MarkerInterval = DefaultMarkerInterval
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Table == "" || cfg.LoadMirror == nil {
		return nil, errors.New("bench: freshness probe needs a table and a mirror loader")
	}
	bs, err := dialStream(ctx, cfg.Addr, FreshnessSource, cfg.DialOptions)
	if err != nil {
		return nil, fmt.Errorf("freshness probe: %w", err)
	}
	defer bs.abort()
	rep := &FreshnessReport{PollMs: float64(cfg.PollInterval) / float64(time.Millisecond)}
	sent := make(map[string]time.Time) // marker key -> send time, until seen
	var delays []time.Duration
	// The poller runs in this goroutine between sends: one marker in
	// flight at a time keeps the sender simple, and acks come in ms.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	lastSnap := int64(-1)
	poll := func() {
		rep.Polls++
		tbl, err := cfg.LoadMirror(pctx)
		if errors.Is(err, catalog.ErrNoSuchTable) {
			return // the first commit has not created the mirror yet: nothing visible
		}
		if err != nil {
			rep.PollErrors++
			rep.LastPollError = err.Error()
			return
		}
		snap := tbl.CurrentSnapshot()
		if snap == nil || snap.SnapshotID == lastSnap {
			return
		}
		keys, err := scanKeys(pctx, tbl)
		if err != nil {
			rep.PollErrors++
			rep.LastPollError = err.Error()
			return
		}
		lastSnap = snap.SnapshotID
		now := time.Now()
		for k, at := range sent {
			if _, ok := keys[k]; ok {
				delays = append(delays, now.Sub(at))
				delete(sent, k)
			}
		}
	}
	seq, entry := bs.first, bs.firstEntry
	nextMarker := time.Now()
	pollTick := time.NewTicker(cfg.PollInterval)
	defer pollTick.Stop()
	for ctx.Err() == nil {
		if !time.Now().Before(nextMarker) {
			entry++
			key := "marker-" + strconv.FormatUint(entry, 10)
			at := time.Now()
			if err := sendMarker(bs, seq, entry, cfg.Table, key, at); err != nil {
				return rep, fmt.Errorf("freshness probe: marker %s: %w", key, err)
			}
			seq++
			rep.Markers++
			sent[key] = at
			nextMarker = at.Add(cfg.MarkerInterval)
		}
		select {
		case <-ctx.Done():
		case <-pollTick.C:
			poll()
		}
	}
	deadline := time.Now().Add(cfg.Grace)
	for len(sent) > 0 && time.Now().Before(deadline) {
		time.Sleep(cfg.PollInterval)
		poll()
	}
	rep.Seen = len(delays)
	if len(delays) > 0 {
		slices.Sort(delays)
		pct := func(p float64) float64 {
			return float64(delays[min(len(delays)-1, int(p*float64(len(delays))))]) / float64(time.Millisecond)
		}
		rep.P50Ms, rep.P99Ms, rep.MaxMs = pct(0.50), pct(0.99), pct(1)
	}
	return rep, nil
}

// sendMarker sends one marker row as its own batch and waits for its ack.
func sendMarker(bs benchStream, seq, entry uint64, tableName, key string, at time.Time) error {
	ms := uint64(at.UnixMilli())
	frame, err := codec.EncodeBatch(&codec.Batch{Timestamp: ms, Sequence: seq, SourceID: []byte(FreshnessSource),
		Entries: []codec.Entry{{Sequence: entry, Timestamp: ms, Op: codec.OpInsert, Table: []byte(tableName),
			RowID: []byte(key), After: fmt.Appendf(nil, `{"sent_ms":%d}`, ms)}}})
	if err != nil {
		return err
	}
	if err := bs.stream.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
		return err
	}
	for {
		resp, err := bs.stream.Recv()
		if err != nil {
			return err
		}
		if resp.GetAck() != nil {
			return nil
		}
		if n := resp.GetNack(); n != nil {
			return fmt.Errorf("nack %s: %s", n.GetReason(), n.GetErrorMessage())
		}
	}
}

// scanKeys reads the row_id column of the table's current snapshot, with
// its deletes applied.
func scanKeys(ctx context.Context, tbl *table.Table) (map[string]struct{}, error) {
	_, it, err := tbl.Scan(table.WithSelectedFields("row_id")).ToArrowRecords(ctx)
	if err != nil {
		return nil, err
	}
	keys := make(map[string]struct{})
	for rec, err := range it {
		if err != nil {
			return nil, err
		}
		if col, ok := rec.Column(0).(*array.String); ok {
			for i := range col.Len() {
				if k := col.Value(i); strings.HasPrefix(k, "marker-") {
					keys[strings.Clone(k)] = struct{}{}
				}
			}
		}
		rec.Release()
	}
	return keys, nil
}
