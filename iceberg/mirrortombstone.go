package iceberg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/google/uuid"
)

// Deletes survive a restart through tombstone files: Parquet files of
// (row_id, event_ms, source_id, entry_seq), one row per key whose winning
// change is a delete, under <table location>/data/tombstones/. The table property
// PropMirrorTombstones lists the files that count; a mirror commit that
// deletes keys writes one file of its new tombstones and sets the property
// in the SAME transaction as its row delta, so the tombstones and the rows
// they stand for are committed together (a failed commit leaves an
// unreferenced file, which orphan cleanup removes).
//
// Each commit adds a small file; once the list reaches
// maxMirrorTombstoneFiles, the commit writes one file of every tombstone the
// writer still keeps instead, which also forgets the tombstones older than
// the retention (Config.MirrorTombstoneRetention, relative to the newest
// event time the table holds). A file all of whose tombstones are past the
// retention is dropped from the list at any commit. So a tombstone is kept
// for at least the retention; a change older than a forgotten tombstone can
// bring its row back (docs/mirror.md).

// PropMirrorTombstones is the mirror table property listing its tombstone
// files (JSON).
const PropMirrorTombstones = "lakehouse.mirror.tombstones"

// maxMirrorTombstoneFiles is the number of tombstone files a mirror table
// lists before a commit merges them into one.
const maxMirrorTombstoneFiles = 8

// tombstoneDir is the directory of the tombstone files under a table's
// location: inside data/, because object stores that serve Iceberg tables
// as such (SeaweedFS's table buckets) refuse other keys, metadata/ files
// other than Iceberg's included. Orphan cleanup keeps the listed ones.
const tombstoneDir = "data/tombstones"

// tombstoneFile is one entry of PropMirrorTombstones.
type tombstoneFile struct {
	Path    string `json:"path"`
	Count   int    `json:"count"`
	MaxMs   uint64 `json:"max_event_ms"` // the newest tombstone's event time
	Version int    `json:"v"`
}

const tombstoneFormatVersion = 1

// tombstone is a key whose winning change is a delete.
type tombstone struct {
	key string
	ord orderKey
}

func tombstoneFiles(props map[string]string) ([]tombstoneFile, error) {
	raw, ok := props[PropMirrorTombstones]
	if !ok || raw == "" {
		return nil, nil
	}
	var files []tombstoneFile
	if err := json.Unmarshal([]byte(raw), &files); err != nil {
		return nil, fmt.Errorf("mirror: table property %s: %w", PropMirrorTombstones, err)
	}
	for _, f := range files {
		if f.Version != tombstoneFormatVersion || f.Path == "" {
			return nil, fmt.Errorf("mirror: table property %s: unknown tombstone file %+v", PropMirrorTombstones, f)
		}
	}
	return files, nil
}

// isTombstoneFile reports whether path is one of the files props list
// (orphan cleanup keeps them).
func isTombstoneFile(props map[string]string, path string) bool {
	// Compared by their part from the tombstone directory on: listings may
	// spell the scheme and authority differently (file:///x vs /x).
	sep := "/" + tombstoneDir + "/"
	i := strings.LastIndex(path, sep)
	if i < 0 {
		return false
	}
	files, _ := tombstoneFiles(props)
	return slices.ContainsFunc(files, func(f tombstoneFile) bool {
		j := strings.LastIndex(f.Path, sep)
		return j >= 0 && f.Path[j:] == path[i:]
	})
}

var tombstoneSchema = arrow.NewSchema([]arrow.Field{
	{Name: "row_id", Type: arrow.BinaryTypes.String},
	{Name: "event_ms", Type: arrow.PrimitiveTypes.Int64},
	{Name: "source_id", Type: arrow.BinaryTypes.String},
	{Name: "entry_seq", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// writeTombstones writes ts as a new tombstone file of tbl.
func writeTombstones(ctx context.Context, tbl *table.Table, ts []tombstone) (tombstoneFile, error) {
	tf := tombstoneFile{Path: strings.TrimSuffix(tbl.Location(), "/") + "/" + tombstoneDir + "/" + uuid.NewString() + ".parquet",
		Count: len(ts), Version: tombstoneFormatVersion}
	b := array.NewRecordBuilder(memory.DefaultAllocator, tombstoneSchema)
	defer b.Release()
	for _, t := range ts {
		b.Field(0).(*array.StringBuilder).Append(t.key)
		b.Field(1).(*array.Int64Builder).Append(int64(t.ord.eventMs))
		b.Field(2).(*array.StringBuilder).Append(t.ord.source)
		b.Field(3).(*array.Int64Builder).Append(int64(t.ord.entry))
		tf.MaxMs = max(tf.MaxMs, t.ord.eventMs)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	data, err := encodeSideFile(rec)
	if err != nil {
		return tf, fmt.Errorf("mirror: tombstone file: %w", err)
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return tf, err
	}
	if err := writeSideFile(fs, tf.Path, data); err != nil {
		return tf, fmt.Errorf("mirror: write tombstone file: %w", err)
	}
	return tf, nil
}

// loadTombstones adds the tombstones of tbl's files to idx.
func (s *Sink) loadTombstones(ctx context.Context, tbl *table.Table, idx *mirrorIndex) error {
	files, err := tombstoneFiles(tbl.Properties())
	if err != nil || len(files) == 0 {
		return err
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return err
	}
	for _, tf := range files {
		if err := readTombstones(ctx, fs, tf.Path, idx); err != nil {
			return fmt.Errorf("mirror: tombstone file %s: %w", tf.Path, err)
		}
	}
	idx.files = files
	return nil
}

func readTombstones(ctx context.Context, fs icebergio.IO, path string, idx *mirrorIndex) error {
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return readSideFile(ctx, f, func(rec arrow.RecordBatch) error {
		keys, ok1 := rec.Column(0).(*array.String)
		ms, ok2 := rec.Column(1).(*array.Int64)
		srcs, ok3 := rec.Column(2).(*array.String)
		seqs, ok4 := rec.Column(3).(*array.Int64)
		if rec.NumCols() != 4 || !ok1 || !ok2 || !ok3 || !ok4 {
			return errors.New("unexpected columns")
		}
		for i := range keys.Len() {
			idx.set(keys.Value(i), orderKey{eventMs: uint64(ms.Value(i)), source: srcs.Value(i), entry: uint64(seqs.Value(i))}, true)
		}
		return nil
	})
}

// tombstoneUpdate is what a mirror commit changes in the tombstone files.
type tombstoneUpdate struct {
	files   []tombstoneFile // the new list (nil: unchanged)
	written *tombstoneFile  // the file written (removed if the commit fails)
	merged  bool            // the list was merged: forget old tombstones from memory
	cutoff  uint64
}

// planTombstones writes the tombstone file of a commit's winning deletes
// (applied to idx already) and returns the table's new file list. retention
// < 0 keeps tombstones forever.
func (s *Sink) planTombstones(ctx context.Context, tbl *table.Table, idx *mirrorIndex, deletes []tombstone) (tombstoneUpdate, error) {
	var up tombstoneUpdate
	retention := s.cfg.MirrorTombstoneRetention
	if retention > 0 && idx.maxEventMs > uint64(retention.Milliseconds()) {
		up.cutoff = idx.maxEventMs - uint64(retention.Milliseconds())
	}
	keep := slices.DeleteFunc(slices.Clone(idx.files), func(f tombstoneFile) bool { return f.MaxMs < up.cutoff })
	changed := len(keep) != len(idx.files)
	switch {
	case len(deletes) == 0:
	case len(keep) < maxMirrorTombstoneFiles:
		tf, err := writeTombstones(ctx, tbl, deletes)
		if err != nil {
			return up, err
		}
		up.written = &tf
		keep = append(keep, tf)
		changed = true
	default:
		// Merge: one file of every tombstone still kept.
		var all []tombstone
		idx.entries.each(func(k []byte, e indexEntry) {
			if e.deleted && e.eventMs >= up.cutoff {
				all = append(all, tombstone{key: string(k), ord: orderKey{eventMs: e.eventMs, source: idx.sources[e.source], entry: e.entry}})
			}
		})
		up.merged, changed, keep = true, true, nil
		if len(all) > 0 {
			slices.SortFunc(all, func(a, b tombstone) int { return strings.Compare(a.key, b.key) })
			tf, err := writeTombstones(ctx, tbl, all)
			if err != nil {
				return up, err
			}
			up.written = &tf
			keep = []tombstoneFile{tf}
		}
	}
	if changed {
		up.files = keep
		if up.files == nil {
			up.files = []tombstoneFile{}
		}
	}
	return up, nil
}

// prop returns the property value of the new list ("" and false when the
// list did not change).
func (up *tombstoneUpdate) prop() (string, bool) {
	if up.files == nil {
		return "", false
	}
	b, _ := json.Marshal(up.files) // cannot fail
	return string(b), true
}

// abandon removes the file written for a commit that failed.
func (up *tombstoneUpdate) abandon(ctx context.Context, tbl *table.Table) {
	if up.written == nil {
		return
	}
	if fs, err := tbl.FS(ctx); err == nil {
		_ = fs.Remove(up.written.Path)
	}
}
