// Package legacychild simulates a legacy TypeScript child of the original
// system speaking the WebSocket protocol of spec/legacy-protocol.md: the
// bridge's tests use it against fakes and real servers, and `lakehouse demo`
// uses it to stream through the bridge.
package legacychild

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// Child simulates the original TypeScript child (DEFAULT_CHILD_CONFIG):
// JSON connect when the socket opens, binary batches with correlation ids
// encoded in one reused buffer (so every frame but the first carries a stale
// checksum), JSON heartbeats, the text ping, and acks matched by correlation
// id only. A batch unanswered after AckTimeout, or nacked with shouldRetry,
// is resent with the same entries under a NEW batch number with IS_RETRY, up
// to MaxRetries times.
type Child struct {
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
	// Entries makes the n entries of a new batch, the first with entry
	// sequence first. Nil: a small two-table workload (users, orders).
	Entries func(first uint64, n int) []codec.Entry
	// OnError receives errors the original would only log (an entry it
	// cannot encode). Nil: ignored.
	OnError func(error)

	ws *websocket.Conn

	sendMu    sync.Mutex // the encode buffer is shared, as in the original
	encBuf    []byte
	lastCRC   [4]byte
	nextBatch uint64
	nextEntry uint64
	nextCorr  uint64

	mu      sync.Mutex
	pending map[string]*pending // by correlation id
	queued  int                 // taken out of pending for a resend, not yet sent
	stats   Stats
	status  *codec.StatusMessage
	changed chan struct{} // poked on every state change

	stop     chan struct{}
	readDone chan struct{} // closed when the socket's reader ends
	wg       sync.WaitGroup
}

// pending is a batch sent and not yet answered.
type pending struct {
	seq     uint64
	entries []codec.Entry
	sentAt  time.Time
	retries int
	retryAt time.Time // zero unless a retry is scheduled
}

// Stats are a child's counters.
type Stats struct {
	Sent, Resent, Acked, Duplicates, Nacked, Failed, TimedOut, Ignored int
	Pongs, TextPongs, Statuses                                         int
	AckedEntries                                                       map[uint64]int
}

// Start connects to url (ws://host:port/, any path) and runs the child until
// Close: it sends the JSON connect, then reads answers, resends and sends
// heartbeats in the background.
func (c *Child) Start(ctx context.Context, url string) error {
	if c.AckTimeout == 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 100 * time.Millisecond
	}
	if c.Entries == nil {
		c.Entries = smallEntries
	}
	c.pending = make(map[string]*pending)
	c.stats.AckedEntries = make(map[uint64]int)
	c.changed = make(chan struct{}, 1)
	c.stop = make(chan struct{})
	c.readDone = make(chan struct{})
	c.nextBatch, c.nextEntry = 1, 1
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{}})
	if err != nil {
		return err
	}
	c.ws = ws
	c.writeJSON(codec.ConnectMessage{
		Type: codec.JSONConnect, Timestamp: time.Now().UnixMilli(), SourceDoID: c.Source, SourceShardName: c.Shard,
		ProtocolVersion: 1, Capabilities: codec.Capabilities{BinaryProtocol: true, Batching: true, MaxBatchSize: 1000, MaxMessageSize: 4 << 20},
	})
	c.wg.Add(2)
	go c.readLoop()
	go c.timerLoop()
	return nil
}

// Close stops the child and closes its socket.
func (c *Child) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	_ = c.ws.CloseNow()
	c.wg.Wait()
}

func (c *Child) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *Child) writeJSON(v any) {
	p, _ := json.Marshal(v)
	c.write(websocket.MessageText, p)
}

func (c *Child) write(typ websocket.MessageType, p []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.ws.Write(ctx, typ, p) // a failed write shows up as a timeout and a resend
}

// SendEntries queues n new entries as one batch and sends it.
func (c *Child) SendEntries(n int) {
	c.mu.Lock()
	first := c.nextEntry
	c.nextEntry += uint64(n)
	c.mu.Unlock()
	c.sendBatch(&pending{entries: c.Entries(first, n)}, false)
}

// smallEntries is the default workload: INSERT, UPDATE and DELETE in turn
// on two tables, with small rows.
func smallEntries(first uint64, n int) []codec.Entry {
	entries := make([]codec.Entry, n)
	for i := range entries {
		s := first + uint64(i)
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
	return entries
}

// sendBatch encodes and sends p under a new batch number and correlation id.
func (c *Child) sendBatch(p *pending, retry bool) {
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
		if c.OnError != nil {
			c.OnError(fmt.Errorf("legacy child %s: encode: %w", c.Source, err))
		}
		return
	}
	// The original computes the CRC before writing the checksum field, over
	// whatever the previous frame left there.
	copy(c.encBuf[36:40], c.lastCRC[:])
	binary.LittleEndian.PutUint32(c.lastCRC[:], crc32.ChecksumIEEE(c.encBuf))
	copy(c.encBuf[36:40], c.lastCRC[:])
	c.write(websocket.MessageBinary, c.encBuf)
}

// Disconnected is closed when the child's WebSocket has ended (the
// simulator does not reconnect).
func (c *Child) Disconnected() <-chan struct{} { return c.readDone }

func (c *Child) readLoop() {
	defer c.wg.Done()
	defer close(c.readDone)
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

func (c *Child) onText(p []byte) {
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
func (c *Child) take(corr []byte, seq uint64) *pending {
	p := c.pending[string(corr)]
	if p == nil || (c.LoseAck != nil && c.LoseAck(seq)) {
		c.stats.Ignored++
		return nil
	}
	return p
}

func (c *Child) onAck(a *codec.Ack) {
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

func (c *Child) onNack(n *codec.Nack) {
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
func (c *Child) timerLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(min(c.AckTimeout/4, 20*time.Millisecond))
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case now := <-tick.C:
			var resend []*pending
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

// WaitIdle waits until no batch is pending, at most d.
func (c *Child) WaitIdle(d time.Duration) (Stats, error) {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		n := len(c.pending) + c.queued
		st := c.stats
		c.mu.Unlock()
		if n == 0 {
			return st, nil
		}
		select {
		case <-c.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			return st, fmt.Errorf("legacy child %s: %d batches still pending after %v (stats %+v)", c.Source, n, d, st)
		}
	}
}

// Pending is the number of batches sent (or due for a resend) and not yet
// answered: a caller that wants to bound them waits while it is high, as
// the original's 100-batch limit did.
func (c *Child) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) + c.queued
}

// Stats returns a copy of the child's counters.
func (c *Child) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.AckedEntries = make(map[uint64]int, len(c.stats.AckedEntries))
	for k, v := range c.stats.AckedEntries {
		st.AckedEntries[k] = v
	}
	return st
}
