package wsbridge

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/auth"
	"github.com/dot-do/lakehouse-rpc/internal/protomap"
)

func bufferStatus(b *lakehousev1.BufferStats) codec.BufferStatus {
	return codec.BufferStatus{
		BatchCount:      int(b.GetBatchCount()),
		EntryCount:      int(b.GetEntryCount()),
		TotalSizeBytes:  int64(b.GetTotalSizeBytes()),
		Utilization:     b.GetUtilization(),
		OldestBatchTime: b.GetOldestBatchTimeMs(),
		NewestBatchTime: b.GetNewestBatchTimeMs(),
	}
}

// statusMessage converts the server's status to the legacy JSON status.
func statusMessage(s *lakehousev1.ServerStatus) codec.StatusMessage {
	return codec.StatusMessage{
		Type:              codec.JSONStatus,
		Timestamp:         time.Now().UnixMilli(),
		State:             protomap.ParentStateName(s.GetState()),
		Buffer:            bufferStatus(s.GetBuffer()),
		ConnectedChildren: int(s.GetConnectedSources()),
		LastFlushTime:     s.GetLastFlushTimeMs(),
		NextFlushTime:     s.GetNextFlushTimeMs(),
	}
}

// FlushResultJSON is the JSON body of POST /flush: the original parent's
// FlushResult field names.
type FlushResultJSON struct {
	Success        bool     `json:"success"`
	BatchesFlushed uint64   `json:"batchesFlushed"`
	EntriesFlushed uint64   `json:"entriesFlushed"`
	BytesWritten   uint64   `json:"bytesWritten"`
	Paths          []string `json:"paths"`
	DurationMs     int64    `json:"durationMs"`
	Error          string   `json:"error,omitempty"`
	UsedFallback   bool     `json:"usedFallback"`
}

func flushResultJSON(r *lakehousev1.FlushResult) FlushResultJSON {
	paths := r.GetPaths()
	if paths == nil {
		paths = []string{}
	}
	return FlushResultJSON{
		Success:        r.GetSuccess(),
		BatchesFlushed: r.GetBatchesFlushed(),
		EntriesFlushed: r.GetEntriesFlushed(),
		BytesWritten:   r.GetBytesWritten(),
		Paths:          paths,
		DurationMs:     r.GetDurationMs(),
		Error:          r.GetError(),
		UsedFallback:   r.GetUsedFallback(),
	}
}

// ChildStatusJSON is one child (source) in GET /status.
type ChildStatusJSON struct {
	SourceDoID        string `json:"sourceDoId"`
	SourceShardName   string `json:"sourceShardName,omitempty"`
	Connected         bool   `json:"connected"`
	LastSequence      uint64 `json:"lastSequence"`
	LastEntrySequence uint64 `json:"lastEntrySequence"`
	PersistedSequence uint64 `json:"persistedSequence"`
	BatchesReceived   uint64 `json:"batchesReceived"`
	EntriesReceived   uint64 `json:"entriesReceived"`
	LastSeen          int64  `json:"lastSeen,omitempty"`
	SequenceMode      string `json:"sequenceMode"`
}

// ChildStateJSON is one connected child in GET /status under the original
// parent's name and fields (childStates), for monitoring written against it.
// Sequences are the child's own batch numbers where the child is connected
// through this bridge, else the server's; times are ms since the Unix epoch
// (0: unknown).
type ChildStateJSON struct {
	ID                   string `json:"id"`
	ChildShardName       string `json:"childShardName"`
	LastReceivedSequence uint64 `json:"lastReceivedSequence"`
	LastAckedSequence    uint64 `json:"lastAckedSequence"`
	ConnectedAt          int64  `json:"connectedAt"`
	LastActivityAt       int64  `json:"lastActivityAt"`
	BatchesReceived      uint64 `json:"batchesReceived"`
	EntriesReceived      uint64 `json:"entriesReceived"`
}

// StatusJSON is the JSON body of GET /status: the original parent's status
// (state, buffer, connectedChildren, childStates, fallbackHasData: whether
// fallback storage, here the write-ahead log, holds data waiting for
// storage), and beside it this service's own view: every source (children,
// hasFallbackData), the write-ahead log, the recovery loop and the bridge.
type StatusJSON struct {
	State             string             `json:"state"`
	Buffer            codec.BufferStatus `json:"buffer"`
	ConnectedChildren int                `json:"connectedChildren"`
	ChildStates       []ChildStateJSON   `json:"childStates"`
	FallbackHasData   bool               `json:"fallbackHasData"`
	Children          []ChildStatusJSON  `json:"children"`
	HasFallbackData   bool               `json:"hasFallbackData"`
	LastFlushTime     int64              `json:"lastFlushTime,omitempty"`
	NextFlushTime     int64              `json:"nextFlushTime,omitempty"`
	LastFlush         *FlushResultJSON   `json:"lastFlush,omitempty"`
	WAL               WALStatusJSON      `json:"wal"`
	Recovery          RecoveryStatusJSON `json:"recovery"`
	BridgeConnections int                `json:"bridgeConnections"`
	ServerTime        int64              `json:"serverTime"`
	Staged            StagedStatusJSON   `json:"staged"`
	Tables            []TableStatusJSON  `json:"tables"`
}

// StagedStatusJSON describes data files written and waiting for the next
// commit in GET /status.
type StagedStatusJSON struct {
	BatchCount uint64 `json:"batchCount"`
	EntryCount uint64 `json:"entryCount"`
	Bytes      uint64 `json:"bytes"`
}

// TableStatusJSON describes one table's health and last maintenance in GET
// /status.
type TableStatusJSON struct {
	Name                    string `json:"name"`
	Snapshots               uint32 `json:"snapshots"`
	DataFiles               uint64 `json:"dataFiles"`
	Manifests               uint32 `json:"manifests"`
	MetadataBytes           uint64 `json:"metadataBytes"`
	LastMaintenanceTime     int64  `json:"lastMaintenanceTime,omitempty"`
	LastMaintenanceDuration int64  `json:"lastMaintenanceDurationMs"`
	ExpiredSnapshots        uint32 `json:"expiredSnapshots"`
	FilesCompacted          uint32 `json:"filesCompacted"`
	FilesWritten            uint32 `json:"filesWritten"`
	OrphansRemoved          uint32 `json:"orphansRemoved"`
	LastError               string `json:"lastError,omitempty"`
}

// WALStatusJSON describes the server's write-ahead log in GET /status.
type WALStatusJSON struct {
	SizeBytes    uint64 `json:"sizeBytes"`
	SegmentCount uint32 `json:"segmentCount"`
	CapBytes     uint64 `json:"capBytes"`
	// State is "ok", or "failed" while a write or fsync failure (a full
	// disk) stops the log and it recovers by itself (batches are nacked
	// buffer_full meanwhile).
	State            string `json:"state"`
	Failures         uint64 `json:"failures"`
	Recoveries       uint64 `json:"recoveries"`
	LastError        string `json:"lastError,omitempty"`
	FailedSince      int64  `json:"failedSince,omitempty"`
	RecoveryAttempts uint32 `json:"recoveryAttempts,omitempty"`
	NextProbeTime    int64  `json:"nextProbeTime,omitempty"`
}

// RecoveryStatusJSON describes the storage recovery loop in GET /status.
type RecoveryStatusJSON struct {
	Active         bool   `json:"active"`
	Attempt        uint32 `json:"attempt"`
	LastError      string `json:"lastError,omitempty"`
	NextRetryTime  int64  `json:"nextRetryTime,omitempty"`
	PendingBatches uint64 `json:"pendingBatches"`
}

func (b *Bridge) statusJSON(s *lakehousev1.ServerStatus) StatusJSON {
	out := StatusJSON{
		State:             protomap.ParentStateName(s.GetState()),
		Buffer:            bufferStatus(s.GetBuffer()),
		ConnectedChildren: int(s.GetConnectedSources()),
		Children:          make([]ChildStatusJSON, 0, len(s.GetSources())),
		LastFlushTime:     s.GetLastFlushTimeMs(),
		NextFlushTime:     s.GetNextFlushTimeMs(),
		WAL: WALStatusJSON{
			SizeBytes:        s.GetWal().GetSizeBytes(),
			SegmentCount:     s.GetWal().GetSegmentCount(),
			CapBytes:         s.GetWal().GetCapBytes(),
			State:            walStateName(s.GetWal().GetState()),
			Failures:         s.GetWal().GetFailures(),
			Recoveries:       s.GetWal().GetRecoveries(),
			LastError:        s.GetWal().GetLastError(),
			FailedSince:      s.GetWal().GetFailedSinceMs(),
			RecoveryAttempts: s.GetWal().GetRecoveryAttempts(),
			NextProbeTime:    s.GetWal().GetNextProbeTimeMs(),
		},
		Recovery: RecoveryStatusJSON{
			Active:         s.GetRecovery().GetActive(),
			Attempt:        s.GetRecovery().GetAttempt(),
			LastError:      s.GetRecovery().GetLastError(),
			NextRetryTime:  s.GetRecovery().GetNextRetryTimeMs(),
			PendingBatches: s.GetRecovery().GetPendingBatches(),
		},
		BridgeConnections: b.Connections(),
		Staged: StagedStatusJSON{
			BatchCount: s.GetStaged().GetBatchCount(),
			EntryCount: s.GetStaged().GetEntryCount(),
			Bytes:      s.GetStaged().GetBytes(),
		},
		Tables:     make([]TableStatusJSON, 0, len(s.GetTables())),
		ServerTime: s.GetServerTimeMs(),
	}
	out.HasFallbackData = out.Recovery.Active || out.Recovery.PendingBatches > 0
	out.FallbackHasData = out.HasFallbackData
	out.ChildStates = b.childStates(s.GetSources())
	if lf := s.GetLastFlush(); lf != nil {
		j := flushResultJSON(lf)
		out.LastFlush = &j
	}
	for _, t := range s.GetTables() {
		out.Tables = append(out.Tables, TableStatusJSON{
			Name:                    t.GetName(),
			Snapshots:               t.GetSnapshots(),
			DataFiles:               t.GetDataFiles(),
			Manifests:               t.GetManifests(),
			MetadataBytes:           t.GetMetadataBytes(),
			LastMaintenanceTime:     t.GetLastMaintenanceTimeMs(),
			LastMaintenanceDuration: t.GetLastMaintenanceDurationMs(),
			ExpiredSnapshots:        t.GetExpiredSnapshots(),
			FilesCompacted:          t.GetFilesCompacted(),
			FilesWritten:            t.GetFilesWritten(),
			OrphansRemoved:          t.GetOrphansRemoved(),
			LastError:               t.GetLastError(),
		})
	}
	for _, src := range s.GetSources() {
		out.Children = append(out.Children, ChildStatusJSON{
			SourceDoID:        src.GetSourceId(),
			SourceShardName:   src.GetShardName(),
			Connected:         src.GetConnected(),
			LastSequence:      src.GetLastSequence(),
			LastEntrySequence: src.GetLastEntrySequence(),
			PersistedSequence: src.GetPersistedSequence(),
			BatchesReceived:   src.GetBatchesReceived(),
			EntriesReceived:   src.GetEntriesReceived(),
			LastSeen:          src.GetLastSeenTimeMs(),
			SequenceMode:      protomap.SequenceModeName(src.GetSequenceMode()),
		})
	}
	return out
}

// localChild is what the bridge knows of a child connected through it.
type localChild struct {
	shard                   string
	lastReceived, lastAcked uint64
	connectedAt, lastActive time.Time
}

// localChildren returns, per source, the newest connection's view.
func (b *Bridge) localChildren() map[string]localChild {
	b.mu.Lock()
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	out := make(map[string]localChild, len(conns))
	for _, c := range conns {
		c.mu.Lock()
		lc := localChild{shard: c.shard, lastReceived: c.lastReceived, lastAcked: c.lastAcked,
			connectedAt: c.connectedAt, lastActive: c.lastActive}
		source := c.source
		c.mu.Unlock()
		if source == "" {
			continue
		}
		if old, ok := out[source]; !ok || lc.connectedAt.After(old.connectedAt) {
			out[source] = lc
		}
	}
	return out
}

// childStates lists the connected sources as the original parent did.
func (b *Bridge) childStates(srcs []*lakehousev1.SourceStatus) []ChildStateJSON {
	local := b.localChildren()
	out := make([]ChildStateJSON, 0, len(srcs))
	for _, src := range srcs {
		if !src.GetConnected() {
			continue
		}
		cs := ChildStateJSON{
			ID:                   src.GetSourceId(),
			ChildShardName:       src.GetShardName(),
			LastReceivedSequence: src.GetLastSequence(),
			LastAckedSequence:    src.GetLastSequence(),
			LastActivityAt:       src.GetLastSeenTimeMs(),
			BatchesReceived:      src.GetBatchesReceived(),
			EntriesReceived:      src.GetEntriesReceived(),
		}
		if lc, ok := local[cs.ID]; ok {
			if lc.shard != "" {
				cs.ChildShardName = lc.shard
			}
			cs.LastReceivedSequence, cs.LastAckedSequence = lc.lastReceived, lc.lastAcked
			cs.ConnectedAt = lc.connectedAt.UnixMilli()
			if !lc.lastActive.IsZero() {
				cs.LastActivityAt = max(cs.LastActivityAt, lc.lastActive.UnixMilli())
			}
		}
		out = append(out, cs)
	}
	return out
}

func writeJSONResponse(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// errorJSON is the body of a failed /status.
type errorJSON struct {
	Error string `json:"error"`
}

func (b *Bridge) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(withAuth(r.Context(), auth.FromRequest(r)), b.cfg.RPCTimeout)
	defer cancel()
	resp, err := b.client.GetStatus(ctx, &lakehousev1.GetStatusRequest{})
	if err != nil {
		b.log.Warn("GET /status: upstream GetStatus failed", "err", err)
		writeJSONResponse(w, http.StatusBadGateway, errorJSON{Error: "upstream GetStatus: " + err.Error()})
		return
	}
	writeJSONResponse(w, http.StatusOK, b.statusJSON(resp.GetStatus()))
}

func (b *Bridge) serveFlush(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(withAuth(r.Context(), auth.FromRequest(r)), b.cfg.RPCTimeout)
	defer cancel()
	start := time.Now()
	resp, err := b.client.Flush(ctx, &lakehousev1.FlushRequest{Reason: lakehousev1.FlushReason_FLUSH_REASON_MANUAL})
	if err != nil {
		b.log.Warn("POST /flush: upstream Flush failed", "err", err)
		writeJSONResponse(w, http.StatusBadGateway, FlushResultJSON{
			Paths: []string{}, DurationMs: time.Since(start).Milliseconds(), Error: "upstream Flush: " + err.Error(),
		})
		return
	}
	writeJSONResponse(w, http.StatusOK, flushResultJSON(resp.GetResult()))
}

// walStateName is the /status name of a write-ahead log state.
func walStateName(s lakehousev1.WALState) string {
	if s == lakehousev1.WALState_WAL_STATE_FAILED {
		return "failed"
	}
	return "ok"
}
