package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/coord"
)

// stateFile holds the committed sequencing state, written after every
// successful flush and before the write-ahead log is released, so that
// releasing the log never loses what sequencing needs.
const stateFile = "sequencing.json"

type savedState struct {
	Version int                     `json:"version"`
	Sources map[string]*savedSource `json:"sources"`
	SavedMs int64                   `json:"saved_ms,omitempty"` // when, by this host's clock
}

type savedSource struct {
	Shard     string                   `json:"shard,omitempty"`
	Mode      lakehousev1.SequenceMode `json:"mode"`
	LastSeq   uint64                   `json:"last_seq"`   // committed batch sequence
	LastEntry uint64                   `json:"last_entry"` // committed entry sequence
	Dedup     []dedupItem              `json:"dedup,omitempty"`
	// With coordination: the lease epoch LastSeq was committed under (0:
	// not by this instance), the mark known recorded in the lease row when
	// the state was saved, and the committed entry ranges not yet recorded
	// there. The state is saved before the mark is recorded, so a crash in
	// between leaves LastSeq above MarkedSeq: the restart records it
	// (unrecordedMarks).
	Epoch     uint64      `json:"epoch,omitempty"`
	MarkedSeq uint64      `json:"marked_seq,omitempty"`
	Unmarked  [][2]uint64 `json:"unmarked,omitempty"`
}

// unrecordedMarks are the committed marks of st that may not be in the
// lease rows: sources this instance committed under a lease epoch whose
// mark, when the state was saved, was below the committed sequence or
// lacked entry ranges. Recording one twice is harmless (marks only rise;
// ranges merge), and the lease store ignores a source that moved since.
// The ranges are left out once the state is older than the dedup window
// (dedupAge): the lease row stamps them when recorded, and a stale range
// stamped afresh would make old entries duplicates again.
func (st *savedState) unrecordedMarks(nowMs int64, dedupAge time.Duration) []coord.Mark {
	ranges := nowMs-st.SavedMs < dedupAge.Milliseconds()
	var out []coord.Mark
	for id, ss := range st.Sources {
		if ss.Epoch == 0 || (ss.LastSeq <= ss.MarkedSeq && (len(ss.Unmarked) == 0 || !ranges)) {
			continue
		}
		m := coord.Mark{Source: id, Epoch: ss.Epoch, Seq: ss.LastSeq, Entry: ss.LastEntry}
		if ranges {
			for _, r := range ss.Unmarked {
				m.Ranges = append(m.Ranges, coord.EntryRange{Lo: r[0], Hi: r[1]})
			}
		}
		out = append(out, m)
	}
	return out
}

func loadState(dir string) (*savedState, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &savedState{Version: 1, Sources: map[string]*savedSource{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("server: read state: %w", err)
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("server: parse %s: %w", stateFile, err)
	}
	if st.Sources == nil {
		st.Sources = map[string]*savedSource{}
	}
	return &st, nil
}

// saveState writes the committed sequencing state atomically.
func (s *Server) saveState() error {
	type snap struct {
		src                                *source
		persisted, entry, epoch, markedSeq uint64
		unmarked                           [][2]uint64
	}
	s.mu.Lock()
	list := make([]snap, 0, len(s.sources))
	for _, src := range s.sources {
		sn := snap{src: src, persisted: src.persistedSeq, entry: src.persistedEntry, epoch: src.persistedEpoch, markedSeq: src.markedSeq}
		for _, r := range src.unmarked {
			sn.unmarked = append(sn.unmarked, [2]uint64{r.Lo, r.Hi})
		}
		list = append(list, sn)
	}
	s.mu.Unlock()
	st := savedState{Version: 1, Sources: make(map[string]*savedSource, len(list)), SavedMs: time.Now().UnixMilli()}
	for _, sn := range list {
		ss := &savedSource{LastSeq: sn.persisted, LastEntry: sn.entry, Epoch: sn.epoch, MarkedSeq: sn.markedSeq, Unmarked: sn.unmarked}
		sn.src.mu.Lock()
		ss.Shard, ss.Mode = sn.src.shard, sn.src.mode
		if sn.src.dedup != nil {
			ss.Dedup = sn.src.dedup.items()
		}
		sn.src.mu.Unlock()
		st.Sources[sn.src.id] = ss
	}
	data, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.cfg.DataDir, stateFile), data)
}

// writeFileAtomic writes data to path through a synced temporary file and a
// rename, then syncs the directory.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
