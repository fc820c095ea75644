package wsbridge

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// legacyChild simulates the original TypeScript child (DEFAULT_CHILD_CONFIG):
// JSON connect when the socket opens, binary batches with correlation ids
// encoded in one reused buffer (so every frame but the first carries a stale
// checksum), JSON heartbeats, the text ping, and acks matched by correlation
// id only. A batch unanswered after AckTimeout, or nacked with shouldRetry,
// is resent with the same entries under a NEW batch number with IS_RETRY, up
// to MaxRetries times.
type legacyChild struct {
	Source, Shard string
	// AckTimeout is the original's 30 s unless a test shortens it.
	AckTimeout time.Duration
	// MaxRetries is the original's 3.
	MaxRetries int
	// RetryDelay is the first retry delay without a retryDelayMs (100 ms, x2).
	RetryDelay time.Duration
	// Heartbeat is the heartbeat (and text ping) interval; 0 disables.
	Heartbeat time.Duration
	// LoseAck, when set, makes the child ignore the answer to a batch number,
	// as if the ack were lost on the way (fault injection).
	LoseAck func(batchSeq uint64) bool

	tb testing.TB
	ws *websocket.Conn

	sendMu    sync.Mutex // the encode buffer is shared, as in the original
	encBuf    []byte
	lastCRC   [4]byte
	nextBatch uint64
	nextEntry uint64
	nextCorr  uint64

	mu      sync.Mutex
	pending map[string]*pendingBatch // by correlation id
	queued  int                      // taken out of pending for a resend, not yet sent
	stats   childStats
	status  *codec.StatusMessage
	changed chan struct{} // poked on every state change

	stop chan struct{}
	wg   sync.WaitGroup
}

type pendingBatch struct {
	seq     uint64
	entries []codec.Entry
	sentAt  time.Time
	retries int
	retryAt time.Time // zero unless a retry is scheduled
}

type childStats struct {
	Sent, Resent, Acked, Duplicates, Nacked, Failed, TimedOut, Ignored int
	Pongs, TextPongs, Statuses                                         int
	AckedEntries                                                       map[uint64]int
}

// startLegacyChild connects to url and runs the child until the test ends.
func startLegacyChild(tb testing.TB, url string, c *legacyChild) *legacyChild {
	tb.Helper()
	if c.AckTimeout == 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 100 * time.Millisecond
	}
	c.tb = tb
	c.pending = make(map[string]*pendingBatch)
	c.stats.AckedEntries = make(map[uint64]int)
	c.changed = make(chan struct{}, 1)
	c.stop = make(chan struct{})
	c.nextBatch, c.nextEntry = 1, 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{}})
	if err != nil {
		tb.Fatalf("legacy child: dial: %v", err)
	}
	c.ws = ws
	c.writeJSON(connectMsg(c.Source, c.Shard))
	c.wg.Add(2)
	go c.readLoop()
	go c.timerLoop()
	tb.Cleanup(c.Close)
	return c
}

// Close stops the child and closes its socket.
func (c *legacyChild) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	_ = c.ws.CloseNow()
	c.wg.Wait()
}

func (c *legacyChild) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *legacyChild) writeJSON(v any) {
	p, _ := json.Marshal(v)
	c.write(websocket.MessageText, p)
}

func (c *legacyChild) write(typ websocket.MessageType, p []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.ws.Write(ctx, typ, p) // a failed write shows up as a timeout and a resend
}

// SendEntries queues n new entries as one batch and sends it.
func (c *legacyChild) SendEntries(n int) {
	c.mu.Lock()
	entries := make([]codec.Entry, n)
	for i := range entries {
		s := c.nextEntry
		c.nextEntry++
		op := codec.Op(s % 3)
		e := codec.Entry{Sequence: s, Timestamp: 1764547200000 + s, Op: op, Table: []byte([]string{"users", "orders"}[s%2]), RowID: []byte("r" + strconv.FormatUint(s, 10))}
		row := []byte(`{"id":` + strconv.FormatUint(s, 10) + `,"name":"n-` + strconv.FormatUint(s, 10) + `"}`)
		if op != codec.OpInsert {
			e.Before = row
		}
		if op != codec.OpDelete {
			e.After = row
		}
		entries[i] = e
	}
	c.mu.Unlock()
	c.sendBatch(&pendingBatch{entries: entries}, false)
}

// sendBatch encodes and sends p under a new batch number and correlation id.
func (c *legacyChild) sendBatch(p *pendingBatch, retry bool) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	seq := c.nextBatch
	c.nextBatch++
	c.nextCorr++
	corr := c.Source + "-" + strconv.FormatUint(c.nextCorr, 10)
	p.seq, p.sentAt, p.retryAt = seq, time.Now(), time.Time{}
	c.pending[corr] = p
	if retry {
		c.stats.Resent++
	} else {
		c.stats.Sent++
	}
	c.mu.Unlock()
	b := &codec.Batch{Timestamp: uint64(time.Now().UnixMilli()), Sequence: seq, Retry: retry, SourceID: []byte(c.Source), CorrelationID: []byte(corr), Entries: p.entries}
	var err error
	c.encBuf, err = codec.AppendBatch(c.encBuf[:0], b)
	if err != nil {
		c.tb.Errorf("legacy child: encode: %v", err)
		return
	}
	// The original computes the CRC before writing the checksum field, over
	// whatever the previous frame left there.
	copy(c.encBuf[36:40], c.lastCRC[:])
	binary.LittleEndian.PutUint32(c.lastCRC[:], crc32.ChecksumIEEE(c.encBuf))
	copy(c.encBuf[36:40], c.lastCRC[:])
	c.write(websocket.MessageBinary, c.encBuf)
}

func (c *legacyChild) readLoop() {
	defer c.wg.Done()
	for {
		typ, p, err := c.ws.Read(context.Background())
		if err != nil {
			return
		}
		if typ == websocket.MessageText {
			c.onText(p)
			continue
		}
		if !codec.IsBinary(p) || len(p) < codec.HeaderSize {
			continue
		}
		switch codec.MessageType(p[3]) {
		case codec.TypeAck:
			if a, err := codec.DecodeAck(p); err == nil {
				c.onAck(a)
			}
		case codec.TypeNack:
			if n, err := codec.DecodeNack(p); err == nil {
				c.onNack(n)
			}
		}
	}
}

func (c *legacyChild) onText(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.poke()
	if string(p) == "pong" {
		c.stats.TextPongs++
		return
	}
	var m struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(p, &m)
	switch m.Type {
	case "pong":
		c.stats.Pongs++
	case "status":
		var st codec.StatusMessage
		_ = json.Unmarshal(p, &st)
		c.status = &st
		c.stats.Statuses++
	}
}

// take removes the pending batch an answer is for; answers without a known
// correlation id are ignored, as in the original.
func (c *legacyChild) take(corr []byte, seq uint64) *pendingBatch {
	p := c.pending[string(corr)]
	if p == nil || (c.LoseAck != nil && c.LoseAck(seq)) {
		c.stats.Ignored++
		return nil
	}
	return p
}

func (c *legacyChild) onAck(a *codec.Ack) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.poke()
	p := c.take(a.CorrelationID, a.Sequence)
	if p == nil {
		return
	}
	delete(c.pending, string(a.CorrelationID))
	c.stats.Acked++
	if a.Status == codec.AckDuplicate {
		c.stats.Duplicates++
	}
	for _, e := range p.entries {
		c.stats.AckedEntries[e.Sequence]++
	}
}

func (c *legacyChild) onNack(n *codec.Nack) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.poke()
	p := c.take(n.CorrelationID, n.Sequence)
	if p == nil {
		return
	}
	c.stats.Nacked++
	if !n.ShouldRetry || p.retries >= c.MaxRetries {
		delete(c.pending, string(n.CorrelationID))
		c.stats.Failed++
		return
	}
	delay := time.Duration(n.RetryDelayMs) * time.Millisecond
	if delay == 0 {
		delay = min(c.RetryDelay<<p.retries, 10*time.Second)
	}
	p.retryAt = time.Now().Add(delay)
}

// timerLoop resends timed-out and nacked batches and sends heartbeats.
func (c *legacyChild) timerLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(min(c.AckTimeout/4, 20*time.Millisecond))
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case now := <-tick.C:
			var resend []*pendingBatch
			c.mu.Lock()
			for corr, p := range c.pending {
				due := !p.retryAt.IsZero() && now.After(p.retryAt)
				timedOut := p.retryAt.IsZero() && now.Sub(p.sentAt) > c.AckTimeout
				if !due && !timedOut {
					continue
				}
				delete(c.pending, corr)
				if timedOut {
					c.stats.TimedOut++
				}
				if p.retries >= c.MaxRetries {
					c.stats.Failed++
					continue
				}
				p.retries++
				resend = append(resend, p)
			}
			c.queued += len(resend)
			c.mu.Unlock()
			for _, p := range resend {
				c.sendBatch(p, true)
				c.mu.Lock()
				c.queued--
				c.mu.Unlock()
			}
			if c.Heartbeat > 0 && now.Sub(lastBeat) >= c.Heartbeat {
				lastBeat = now
				c.mu.Lock()
				pendingEntries := 0
				for _, p := range c.pending {
					pendingEntries += len(p.entries)
				}
				c.mu.Unlock()
				c.writeJSON(codec.HeartbeatMessage{Type: codec.JSONHeartbeat, Timestamp: now.UnixMilli(), SourceDoID: c.Source, PendingEntries: int64(pendingEntries)})
				c.write(websocket.MessageText, []byte("ping"))
			}
		}
	}
}

// WaitIdle waits until no batch is pending.
func (c *legacyChild) WaitIdle(d time.Duration) childStats {
	c.tb.Helper()
	deadline := time.After(d)
	for {
		c.mu.Lock()
		n := len(c.pending) + c.queued
		st := c.stats
		c.mu.Unlock()
		if n == 0 {
			return st
		}
		select {
		case <-c.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			c.tb.Fatalf("legacy child %s: %d batches still pending after %v (stats %+v)", c.Source, n, d, st)
		}
	}
}

// Stats returns a copy of the child's counters.
func (c *legacyChild) Stats() childStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.AckedEntries = make(map[uint64]int, len(c.stats.AckedEntries))
	for k, v := range c.stats.AckedEntries {
		st.AckedEntries[k] = v
	}
	return st
}

// TestLegacyChildAgainstFake runs the simulator through the bridge against
// the fake server, with a lost ack (timeout and resend under a new number)
// and a buffer_full nack (retry after retryDelayMs): every entry is stored
// exactly once.
func TestLegacyChildAgainstFake(t *testing.T) {
	fake := newFakeServer()
	var nacked sync.Once
	fake.respond = func(src string, frame []byte, b *codec.Batch) (resp *lakehousev1.StreamResponse, handled bool, err error) {
		if b != nil && b.Sequence == 5 {
			handled := false
			nacked.Do(func() {
				resp = nackResp(b.Sequence, string(b.CorrelationID), lakehousev1.NackReason_NACK_REASON_BUFFER_FULL, "full")
				resp.GetNack().ShouldRetry, resp.GetNack().RetryDelayMs = true, 30
				handled = true
			})
			return resp, handled, nil
		}
		return nil, false, nil
	}
	env := newEnv(t, startFake(t, fake), nil)
	child := startLegacyChild(t, env.wsURL, &legacyChild{
		Source: "legacy-1", Shard: "shard-1", AckTimeout: 300 * time.Millisecond, Heartbeat: 50 * time.Millisecond,
		LoseAck: func(seq uint64) bool { return seq == 3 },
	})
	const batches, per = 12, 25
	for range batches {
		child.SendEntries(per)
	}
	st := child.WaitIdle(20 * time.Second)
	time.Sleep(120 * time.Millisecond) // a heartbeat round
	st = child.Stats()
	if st.Failed != 0 || st.TimedOut < 1 || st.Resent < 2 || st.Duplicates < 1 || st.Nacked < 1 {
		t.Fatalf("stats %+v", st)
	}
	if st.Statuses < 1 || st.Pongs < 1 || st.TextPongs < 1 {
		t.Fatalf("no status/pong/text pong: %+v", st)
	}
	seqs := fake.entrySeqs("legacy-1")
	if len(seqs) != batches*per {
		t.Fatalf("stored %d entries, want %d", len(seqs), batches*per)
	}
	seen := map[uint64]bool{}
	for _, s := range seqs {
		if seen[s] || s < 1 || s > batches*per {
			t.Fatalf("entry %d stored twice or out of range", s)
		}
		seen[s] = true
	}
	for s := uint64(1); s <= batches*per; s++ {
		if st.AckedEntries[s] == 0 {
			t.Fatalf("entry %d never acked", s)
		}
	}
}
