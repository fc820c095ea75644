// Package jsonl is a simple, real sink that writes each table's rows of each
// flush as one JSON-lines file, committed atomically by rename, with the
// flush's watermarks as the file's last line. It keeps the sink.Sink promises
// (idempotent, atomic per table) and serves tests and debugging; production
// uses the Iceberg sink.
package jsonl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// Record is one row as stored.
type Record struct {
	Table     string  `json:"table"`
	SourceID  string  `json:"source_id"`
	ShardName string  `json:"shard_name,omitempty"`
	BatchSeq  uint64  `json:"batch_seq"`
	EntrySeq  uint64  `json:"entry_seq"`
	Op        string  `json:"op"`
	EventTime int64   `json:"event_time_ms"`
	RowID     string  `json:"row_id"`
	Before    *string `json:"before,omitempty"`
	After     *string `json:"after,omitempty"`
	FlushID   uint64  `json:"flush_id"`
}

type trailer struct {
	Watermarks map[string]sink.Watermark `json:"watermarks"`
}

// Sink writes JSON-lines files under a directory.
type Sink struct {
	dir string

	// FailCommit, when set, is called before each table commit; an error it
	// returns fails the commit (fault injection for tests).
	FailCommit func(table string) error

	mu  sync.Mutex
	wms map[string]map[string]sink.Watermark // table dir -> source -> watermark
	seq uint64
}

// Open opens (creating it if needed) a JSON-lines sink in dir.
func Open(dir string) (*Sink, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("jsonl: %w", err)
	}
	s := &Sink{dir: dir, wms: make(map[string]map[string]sink.Watermark)}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) load() error {
	tables, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	for _, t := range tables {
		if !t.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(s.dir, t.Name(), "*.jsonl"))
		if err != nil {
			return err
		}
		wm := make(map[string]sink.Watermark)
		for _, f := range files {
			tr, err := readTrailer(f)
			if err != nil {
				return err
			}
			for src, w := range tr.Watermarks {
				sink.MergeWatermark(wm, src, w)
			}
		}
		s.wms[t.Name()] = wm
	}
	return nil
}

func readTrailer(path string) (*trailer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data = []byte(strings.TrimRight(string(data), "\n"))
	i := strings.LastIndexByte(string(data), '\n')
	var tr trailer
	if err := json.Unmarshal(data[i+1:], &tr); err != nil || tr.Watermarks == nil {
		return nil, fmt.Errorf("jsonl: %s: no watermark trailer", path)
	}
	return &tr, nil
}

// Commit implements sink.Sink.
func (s *Sink) Commit(ctx context.Context, f *sink.Flush) (sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res sink.Result
	for _, t := range f.Tables {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		name := sink.SanitizeName(t.Name)
		if s.FailCommit != nil {
			if err := s.FailCommit(t.Name); err != nil {
				return res, fmt.Errorf("jsonl: commit %s: %w", t.Name, err)
			}
		}
		have := s.wms[name]
		var recs []Record
		for i := range t.Rows {
			r := &t.Rows[i]
			if w, ok := have[r.SourceID]; ok && r.BatchSeq <= w.BatchSeq {
				res.RowsSkipped++
				continue
			}
			recs = append(recs, toRecord(t.Name, f.ID, r))
		}
		if len(recs) == 0 {
			continue
		}
		path, n, err := s.writeFile(name, f, recs)
		if err != nil {
			return res, err
		}
		if have == nil {
			have = make(map[string]sink.Watermark)
			s.wms[name] = have
		}
		for src, w := range f.Watermarks {
			sink.MergeWatermark(have, src, w)
		}
		res.RowsWritten += int64(len(recs))
		res.BytesWritten += n
		res.Paths = append(res.Paths, path)
		res.Tables++
	}
	return res, nil
}

func toRecord(table string, flushID uint64, r *sink.Row) Record {
	rec := Record{
		Table: table, SourceID: r.SourceID, ShardName: r.ShardName, BatchSeq: r.BatchSeq,
		EntrySeq: r.Sequence, Op: r.Op.String(), EventTime: int64(r.Timestamp), RowID: string(r.RowID),
		FlushID: flushID,
	}
	if r.Before != nil {
		b := string(r.Before)
		rec.Before = &b
	}
	if r.After != nil {
		a := string(r.After)
		rec.After = &a
	}
	return rec
}

func (s *Sink) writeFile(name string, f *sink.Flush, recs []Record) (string, int64, error) {
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, fmt.Errorf("jsonl: %w", err)
	}
	s.seq++
	base := fmt.Sprintf("%020d-%d-%d.jsonl", f.ID, time.Now().UnixNano(), s.seq)
	tmp := filepath.Join(dir, "."+base+".tmp")
	fh, err := os.Create(tmp)
	if err != nil {
		return "", 0, fmt.Errorf("jsonl: %w", err)
	}
	w := bufio.NewWriter(fh)
	enc := json.NewEncoder(w)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			fh.Close()
			return "", 0, err
		}
	}
	if err := enc.Encode(trailer{Watermarks: f.Watermarks}); err != nil {
		fh.Close()
		return "", 0, err
	}
	err = errors.Join(w.Flush(), fh.Sync())
	st, _ := fh.Stat()
	err = errors.Join(err, fh.Close())
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, base))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return "", 0, fmt.Errorf("jsonl: write %s: %w", name, err)
	}
	return filepath.Join(dir, base), st.Size(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Watermarks implements sink.Sink.
func (s *Sink) Watermarks(context.Context) (map[string]sink.Watermark, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]sink.Watermark)
	for _, wm := range s.wms {
		for src, w := range wm {
			sink.MergeWatermark(out, src, w)
		}
	}
	return out, nil
}

// Close implements sink.Sink.
func (s *Sink) Close() error { return nil }

// ReadAll returns every committed record under dir, ordered by table, source
// and entry sequence.
func ReadAll(dir string) ([]Record, error) {
	var out []Record
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".jsonl") || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if r.Table != "" {
				out = append(out, r)
			}
		}
		return sc.Err()
	})
	sort.SliceStable(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		if a.SourceID != b.SourceID {
			return a.SourceID < b.SourceID
		}
		return a.EntrySeq < b.EntrySeq
	})
	return out, err
}
