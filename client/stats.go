package client

import (
	"maps"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

// stats are the client's counters and latency digests (guarded by the
// client's mutex).
type stats struct {
	batchesSent, entriesSent, retried, bytesSent uint64
	batchesAcked, entriesAcked, duplicates       uint64
	batchesFailed, entriesFailed                 uint64
	batchesLost                                  uint64
	staleNacks, staleAcks                        uint64
	reconnects, heartbeats, pongs                uint64
	redirects                                    uint64
	nacks                                        map[lakehousev1.NackReason]uint64

	ackHist, persistHist Histogram
	watch                []watchItem // acked batches waiting for a watermark, for persisted latencies
}

type watchItem struct {
	seq       uint64
	firstSent time.Time
}

// maxWatch bounds the acked batches remembered for persisted latencies.
const maxWatch = 1 << 16

// acked counts the ack of b (with status st, after the queue's transition)
// and remembers b for the persisted latency if it is not persisted yet.
func (s *stats) acked(b *batch, st lakehousev1.AckStatus) {
	s.batchesAcked++
	s.entriesAcked += uint64(len(b.entries))
	if st == lakehousev1.AckStatus_ACK_STATUS_DUPLICATE {
		s.duplicates++
	}
	if b.state != stPersisted && !b.firstSent.IsZero() {
		if len(s.watch) >= maxWatch {
			s.watch = s.watch[1:]
		}
		s.watch = append(s.watch, watchItem{seq: b.seq, firstSent: b.firstSent})
	}
}

// persisted records the persisted latencies of the batches a watermark seq
// covers, and returns the newest one (0 when none).
func (s *stats) persisted(seq uint64, now time.Time) time.Duration {
	var lat time.Duration
	n := 0
	for n < len(s.watch) && s.watch[n].seq <= seq {
		lat = now.Sub(s.watch[n].firstSent)
		s.persistHist.Record(lat)
		n++
	}
	s.watch = s.watch[n:]
	return lat
}

// Stats is a snapshot of a client's counters.
type Stats struct {
	// SourceID is the client's source.
	SourceID string `json:"sourceId"`
	// State is the connection state.
	State ConnState `json:"state"`
	// BatchesSent and EntriesSent count first transmissions.
	BatchesSent uint64 `json:"batchesSent"`
	// EntriesSent counts the entries of first transmissions.
	EntriesSent uint64 `json:"entriesSent"`
	// BatchesRetried counts retransmissions.
	BatchesRetried uint64 `json:"batchesRetried"`
	// BytesSent counts the encoded bytes of all transmissions.
	BytesSent uint64 `json:"bytesSent"`
	// BatchesAcked counts acknowledged batches (duplicates included).
	BatchesAcked uint64 `json:"batchesAcked"`
	// EntriesAcked counts their entries.
	EntriesAcked uint64 `json:"entriesAcked"`
	// Duplicates counts batches the server already had.
	Duplicates uint64 `json:"duplicates"`
	// BatchesFailed counts batches given up on.
	BatchesFailed uint64 `json:"batchesFailed"`
	// EntriesFailed counts their entries.
	EntriesFailed uint64 `json:"entriesFailed"`
	// Nacks counts nacks by reason (stale ones excluded).
	Nacks map[string]uint64 `json:"nacks,omitempty"`
	// StaleNacks counts nacks of earlier transmissions, ignored.
	StaleNacks uint64 `json:"staleNacks"`
	// StaleAcks counts acks of batches no longer held, ignored.
	StaleAcks uint64 `json:"staleAcks"`
	// PendingBatches is the number of sealed batches not yet acknowledged
	// (or persisted, in wait-for-persisted mode).
	PendingBatches int `json:"pendingBatches"`
	// PendingEntries is the number of their entries.
	PendingEntries int `json:"pendingEntries"`
	// BufferedEntries is the number of entries in the current, unsealed batch.
	BufferedEntries int `json:"bufferedEntries"`
	// BatchesLost counts batches the server acknowledged but no longer had
	// when the client reconnected, and the client no longer held (each
	// reported as a *LostError through OnError, Flush and Close).
	BatchesLost uint64 `json:"batchesLost"`
	// Reconnects counts streams opened after the first.
	Reconnects uint64 `json:"reconnects"`
	// Redirects counts connects answered with a redirect to the source's
	// owner (followed or not).
	Redirects uint64 `json:"redirects"`
	// RedirectAddr is the owner's address the client streams to after a
	// redirect ("" when it uses the address it was made with).
	RedirectAddr string `json:"redirectAddr,omitempty"`
	// Heartbeats counts heartbeats sent; Pongs the answers.
	Heartbeats uint64 `json:"heartbeats"`
	// Pongs counts pongs received.
	Pongs uint64 `json:"pongs"`
	// LastAckedSequence is the highest batch number acknowledged.
	LastAckedSequence uint64 `json:"lastAckedSequence"`
	// PersistedSequence is the highest Persisted watermark received.
	PersistedSequence uint64 `json:"persistedSequence"`
	// AckLatency digests the time from the last transmission to the ack.
	AckLatency LatencySummary `json:"ackLatency"`
	// PersistedLatency digests the time from the first transmission to the
	// Persisted watermark.
	PersistedLatency LatencySummary `json:"persistedLatency"`
	// Breaker is the circuit breaker's snapshot.
	Breaker BreakerStats `json:"breaker"`
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	br := c.breaker.Stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{
		SourceID:          c.sourceID,
		State:             c.state,
		BatchesSent:       c.st.batchesSent,
		EntriesSent:       c.st.entriesSent,
		BatchesRetried:    c.st.retried,
		BytesSent:         c.st.bytesSent,
		BatchesAcked:      c.st.batchesAcked,
		EntriesAcked:      c.st.entriesAcked,
		Duplicates:        c.st.duplicates,
		BatchesFailed:     c.st.batchesFailed,
		EntriesFailed:     c.st.entriesFailed,
		BatchesLost:       c.st.batchesLost,
		StaleNacks:        c.st.staleNacks,
		StaleAcks:         c.st.staleAcks,
		PendingBatches:    c.q.len(),
		PendingEntries:    c.q.entries,
		BufferedEntries:   len(c.cur),
		Reconnects:        c.st.reconnects,
		Redirects:         c.st.redirects,
		Heartbeats:        c.st.heartbeats,
		Pongs:             c.st.pongs,
		LastAckedSequence: c.q.lastAcked,
		PersistedSequence: c.q.persisted,
		AckLatency:        c.st.ackHist.Summary(),
		PersistedLatency:  c.st.persistHist.Summary(),
		Breaker:           br,
	}
	if c.redir != nil {
		s.RedirectAddr = c.redir.addr
	}
	if len(c.st.nacks) > 0 {
		s.Nacks = make(map[string]uint64, len(c.st.nacks))
		for k, v := range maps.All(c.st.nacks) {
			s.Nacks[NackReasonName(k)] = v
		}
	}
	return s
}

// LatencyHistograms returns copies of the ack and persisted latency
// histograms, for merging across clients.
func (c *Client) LatencyHistograms() (ack, persisted Histogram) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.ackHist, c.st.persistHist
}

// NackReasonName returns the short lower-case name of a nack reason
// ("buffer_full", "invalid_sequence", ...).
func NackReasonName(r lakehousev1.NackReason) string { return protomap.NackReasonName(r) }
