package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// Defaults of LegacyConfig: the legacy blast, 4 WebSockets of
// 100,000 W1 entries each in 1,000-entry frames.
const (
	DefaultLegacyConns   = 4
	DefaultLegacyEntries = 100_000
)

// LegacyConfig configures a legacy blast: Conns WebSockets to the bridge,
// each a legacy child (spec/legacy-protocol.md) sending Entries W1 entries
// in frames of BatchSize entries, all encoded before the clock starts, at
// most Pending unanswered frames at a time.
type LegacyConfig struct {
	// URL is the bridge's WebSocket URL (ws://host:port/).
	URL         string
	Conns       int
	Entries     int
	BatchSize   int
	Pending     int
	TablePrefix string
	// Grace bounds the wait for an answer: a connection with no answer for
	// this long fails the run.
	Grace time.Duration
	// Probe reads the server's CPU over the blast.
	Probe CPUProbe
}

// LegacySummary is the result of a legacy blast.
type LegacySummary struct {
	Conns       int     `json:"conns"`
	Entries     uint64  `json:"entries"` // acknowledged
	Batches     uint64  `json:"batches"` // acknowledged
	Nacks       uint64  `json:"nacks"`
	Resent      uint64  `json:"resent"`
	Seconds     float64 `json:"seconds"` // first send to last ack
	EntriesPerS float64 `json:"entriesPerSec"`
	// CPU is the CPU time the blast cost (see CPUProbe).
	CPU *CPUReport `json:"cpu,omitempty"`
}

func (s *LegacySummary) String() string {
	out := fmt.Sprintf("legacy: %d WebSockets, %d entries acked in %d batches in %.2fs: %.0f entries/s, %d nacks (%d resent)",
		s.Conns, s.Entries, s.Batches, s.Seconds, s.EntriesPerS, s.Nacks, s.Resent)
	if s.CPU != nil {
		out += "; " + s.CPU.String()
	}
	return out
}

func (c *LegacyConfig) normalize() error {
	if c.Conns == 0 {
		c.Conns = DefaultLegacyConns
	}
	if c.Entries == 0 {
		c.Entries = DefaultLegacyEntries
	}
	if c.BatchSize == 0 {
		c.BatchSize = workload.W1BatchSize
	}
	if c.Pending == 0 {
		c.Pending = 8
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	switch {
	case c.URL == "":
		return errors.New("bench: legacy: no WebSocket URL")
	case c.Conns < 1 || c.Entries < 1 || c.BatchSize < 1 || c.Pending < 1:
		return fmt.Errorf("bench: legacy: conns %d, entries %d, batch %d and pending %d must be positive", c.Conns, c.Entries, c.BatchSize, c.Pending)
	}
	return nil
}

// legacyConn is one blasting WebSocket.
type legacyConn struct {
	cfg    *LegacyConfig
	source string
	frames [][]byte // pre-encoded, frame k with correlation id k
	ws     *websocket.Conn

	mu       sync.Mutex
	changed  chan struct{}
	answered []bool
	retry    []int // frames nacked with shouldRetry, to send again
	retryAt  time.Time
	inFlight int
	acked    int
	nextSeq  uint64
	nacks    uint64
	resent   uint64
	failed   error
	lastAck  time.Time
	lastAns  time.Time
}

// RunLegacy runs a legacy blast and reports acked entries/s and the
// server's CPU.
func RunLegacy(ctx context.Context, cfg LegacyConfig) (*LegacySummary, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	// Sources unique to the run: the server drops entries it already has.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	conns := make([]*legacyConn, cfg.Conns)
	for i := range conns {
		lc, err := newLegacyConn(&cfg, fmt.Sprintf("legacy-bench-%s-%d", run, i))
		if err != nil {
			return nil, err
		}
		conns[i] = lc
	}
	for _, lc := range conns {
		if err := lc.dial(ctx); err != nil {
			for _, o := range conns {
				if o.ws != nil {
					_ = o.ws.CloseNow()
				}
			}
			return nil, err
		}
	}
	cpu, err := cfg.Probe.Start(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, lc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lc.run(ctx)
		}()
	}
	wg.Wait()
	sum := &LegacySummary{Conns: cfg.Conns}
	var end time.Time
	for _, lc := range conns {
		sum.Batches += uint64(lc.acked)
		sum.Nacks += lc.nacks
		sum.Resent += lc.resent
		if lc.lastAck.After(end) {
			end = lc.lastAck
		}
	}
	sum.Entries = sum.Batches * uint64(cfg.BatchSize) // every frame but the last
	if last := cfg.Entries % cfg.BatchSize; last != 0 && sum.Batches == uint64(len(conns[0].frames))*uint64(len(conns)) {
		sum.Entries -= uint64(len(conns) * (cfg.BatchSize - last))
	}
	if !end.IsZero() {
		sum.Seconds = end.Sub(start).Seconds()
		sum.EntriesPerS = float64(sum.Entries) / sum.Seconds
	}
	if sum.CPU, err = cpu.Stop(ctx, sum.Entries); err != nil {
		errs = append(errs, err)
	}
	return sum, errors.Join(errs...)
}

func newLegacyConn(cfg *LegacyConfig, source string) (*legacyConn, error) {
	lc := &legacyConn{cfg: cfg, source: source, changed: make(chan struct{}, 1)}
	now := uint64(time.Now().UnixMilli())
	for first := 0; first < cfg.Entries; first += cfg.BatchSize {
		k := len(lc.frames)
		es := workload.Entries(int64(first), int64(min(cfg.BatchSize, cfg.Entries-first)))
		workload.PrefixTables(es, cfg.TablePrefix)
		f, err := codec.AppendBatch(nil, &codec.Batch{Timestamp: now, Sequence: uint64(k + 1), SourceID: []byte(source),
			CorrelationID: []byte(strconv.Itoa(k)), Entries: es})
		if err != nil {
			return nil, fmt.Errorf("bench: legacy: encode: %w", err)
		}
		lc.frames = append(lc.frames, f)
	}
	lc.answered = make([]bool, len(lc.frames))
	lc.nextSeq = uint64(len(lc.frames) + 1)
	return lc, nil
}

func (lc *legacyConn) dial(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, lc.cfg.URL, nil)
	if err != nil {
		return fmt.Errorf("bench: legacy: dial %s: %w", lc.cfg.URL, err)
	}
	ws.SetReadLimit(1 << 20)
	lc.ws = ws
	p, _ := json.Marshal(codec.ConnectMessage{
		Type: codec.JSONConnect, Timestamp: time.Now().UnixMilli(), SourceDoID: lc.source, ProtocolVersion: 1,
		Capabilities: codec.Capabilities{BinaryProtocol: true, Batching: true, MaxBatchSize: lc.cfg.BatchSize, MaxMessageSize: codec.MaxMessageSize},
	})
	return lc.ws.Write(dctx, websocket.MessageText, p)
}

func (lc *legacyConn) poke() {
	select {
	case lc.changed <- struct{}{}:
	default:
	}
}

// run sends every frame, at most Pending unanswered, until each is acked.
func (lc *legacyConn) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer lc.ws.CloseNow()
	readDone := make(chan error, 1)
	go func() { readDone <- lc.read(ctx) }()
	lc.mu.Lock()
	lc.lastAns = time.Now()
	lc.mu.Unlock()
	next := 0
	for {
		lc.mu.Lock()
		if lc.failed != nil {
			err := lc.failed
			lc.mu.Unlock()
			return err
		}
		if lc.acked == len(lc.frames) {
			lc.mu.Unlock()
			return nil
		}
		if time.Since(lc.lastAns) > lc.cfg.Grace {
			lc.mu.Unlock()
			return fmt.Errorf("bench: legacy %s: no answer for %v, %d of %d frames acked", lc.source, lc.cfg.Grace, lc.acked, len(lc.frames))
		}
		var frame []byte
		switch {
		case len(lc.retry) > 0 && !time.Now().Before(lc.retryAt) && lc.inFlight < lc.cfg.Pending:
			k := lc.retry[0]
			lc.retry = lc.retry[1:]
			// A legacy resend: a new batch number and IS_RETRY (the
			// stale checksum is what legacy children send anyway).
			frame = append([]byte(nil), lc.frames[k]...)
			binary.LittleEndian.PutUint64(frame[16:], lc.nextSeq)
			frame[4] |= byte(codec.FlagIsRetry)
			lc.nextSeq++
			lc.resent++
			lc.inFlight++
		case next < len(lc.frames) && lc.inFlight < lc.cfg.Pending && len(lc.retry) == 0:
			frame = lc.frames[next]
			next++
			lc.inFlight++
		}
		lc.mu.Unlock()
		if frame != nil {
			wctx, wcancel := context.WithTimeout(ctx, lc.cfg.Grace)
			err := lc.ws.Write(wctx, websocket.MessageBinary, frame)
			wcancel()
			if err != nil {
				return fmt.Errorf("bench: legacy %s: write: %w", lc.source, err)
			}
			continue
		}
		select {
		case <-lc.changed:
		case <-time.After(10 * time.Millisecond):
		case err := <-readDone:
			lc.mu.Lock()
			done := lc.acked == len(lc.frames)
			lc.mu.Unlock()
			if done {
				return nil
			}
			return fmt.Errorf("bench: legacy %s: connection ended: %w", lc.source, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read takes the bridge's answers: an ack or nack matched to its frame by
// correlation id, as a legacy child does.
func (lc *legacyConn) read(ctx context.Context) error {
	for {
		typ, p, err := lc.ws.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary || !codec.IsBinary(p) || len(p) < codec.HeaderSize {
			continue // status, pong
		}
		switch codec.MessageType(p[3]) {
		case codec.TypeAck:
			a, err := codec.DecodeAck(p)
			if err != nil {
				return fmt.Errorf("bench: legacy %s: ack: %w", lc.source, err)
			}
			lc.answer(a.CorrelationID, func(k int) {
				lc.answered[k] = true
				lc.acked++
				lc.lastAck = time.Now()
			})
		case codec.TypeNack:
			n, err := codec.DecodeNack(p)
			if err != nil {
				return fmt.Errorf("bench: legacy %s: nack: %w", lc.source, err)
			}
			lc.answer(n.CorrelationID, func(k int) {
				lc.nacks++
				if !n.ShouldRetry {
					lc.failed = fmt.Errorf("bench: legacy %s: frame %d refused: %s %s", lc.source, k, n.Reason, strings.TrimSpace(n.Message))
					return
				}
				lc.retry = append(lc.retry, k)
				lc.retryAt = time.Now().Add(max(time.Duration(n.RetryDelayMs)*time.Millisecond, 10*time.Millisecond))
			})
		}
	}
}

// answer applies f to the frame a correlation id names, once per send;
// answers for unknown or already acked frames are ignored.
func (lc *legacyConn) answer(corr []byte, f func(k int)) {
	k, err := strconv.Atoi(string(corr))
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.lastAns = time.Now()
	if err != nil || k < 0 || k >= len(lc.frames) || lc.answered[k] {
		return
	}
	lc.inFlight--
	f(k)
	lc.poke()
}
