package iceberg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// Mirror tables (Config.Mirror) hold the current state of each CDC table:
// one row per row_id with the latest `after`, typed columns, deleted rows
// gone. The mirror of cdc.<T> is <MirrorNamespace>.<T>, format v2, written
// with equality deletes on row_id.
//
// Stage folds each table's rows, above the mirror's own watermarks, to the
// winning change per key and keeps them in memory (the flush's byte slices
// die with Stage). CommitStaged commits the changelog table first, then its
// mirror in a second transaction: the folded changes of every staged part
// the mirror's watermarks do not cover, folded again across parts, minus
// changes older than the row the mirror already holds. Every key touched
// gets an equality delete (upsert), and the winners that are not deletes
// are written as new rows, all in one snapshot with the mirror's per-source
// watermarks as table properties.
//
// Crash between the two transactions: the changelog holds the rows, the
// mirror does not, and CommitStaged has not returned, so the server keeps
// the batches (in memory and in its write-ahead log, whose release and
// saved state follow only a successful CommitStaged). A retry or a restart
// stages them again: the changelog's watermarks skip them there, the
// mirror's lower watermarks let them through to the mirror. Replaying a
// commit the mirror already holds applies nothing (its watermarks cover it).
//
// Winner order: the greatest (event_time ms, source_id as bytes, entry_seq).
// The writer keeps, per mirror table, an in-memory index of the order of
// every key's current change, deletes included (mirrorindex.go), loaded on
// first use from the table's rows and its tombstone files, which each
// commit with deletes writes in its own transaction (mirrortombstone.go);
// docs/mirror.md says how long tombstones are kept.

// mirrorChange is one change of a key, folded.
type mirrorChange struct {
	key     string
	source  string
	entry   uint64
	eventMs uint64
	op      codec.Op
	after   string // a copy; "" for deletes
}

// orderKey is a change's place in the winner order.
type orderKey struct {
	eventMs uint64
	source  string
	entry   uint64
}

func (c *mirrorChange) order() orderKey { return orderKey{c.eventMs, c.source, c.entry} }

func compareOrder(a, b orderKey) int {
	if c := cmp.Compare(a.eventMs, b.eventMs); c != 0 {
		return c
	}
	if c := strings.Compare(a.source, b.source); c != 0 {
		return c
	}
	return cmp.Compare(a.entry, b.entry)
}

// mirrorPart is the mirror side of a staged table: the winner per key of
// the staged rows the mirror's watermarks did not cover.
type mirrorPart struct {
	changes []mirrorChange // one per key
	spans   map[string]span
	rows    int64
}

// foldMirror folds the rows of t above the mirror's watermarks have.
//
// It runs on every row a server stages, so it allocates per table, not per
// row: one string of every row id (the map's and the changes' keys are
// slices of it), the winners found by row index, then copied out into one
// slice of changes and one buffer of `after` texts (rows beaten later in
// the same table are never copied).
func foldMirror(t *sink.Table, have map[string]sink.Watermark) *mirrorPart {
	n := 0
	for i := range t.Rows {
		n += len(t.Rows[i].RowID)
	}
	var ids strings.Builder
	ids.Grow(n)
	for i := range t.Rows {
		ids.Write(t.Rows[i].RowID)
	}
	all := ids.String()
	mp := &mirrorPart{spans: make(map[string]span)}
	win := make(map[string]int, min(len(t.Rows), maxFoldSizeHint)) // key -> winning row
	// A source's rows come in runs (batches): its watermark and span are
	// looked up once per run.
	var (
		src             string
		sp              span
		mark            sink.Watermark
		marked, spanned bool
	)
	off := 0
	for i := range t.Rows {
		r := &t.Rows[i]
		key := all[off : off+len(r.RowID)]
		off += len(r.RowID)
		if i == 0 || r.SourceID != src {
			if spanned {
				mp.spans[src] = sp
			}
			src = r.SourceID
			sp, spanned = mp.spans[src]
			mark, marked = have[src]
		}
		if marked && r.BatchSeq <= mark.BatchSeq {
			continue
		}
		mp.rows++
		sp.add(r.BatchSeq, r.Sequence)
		spanned = true
		if j, ok := win[key]; !ok || compareOrder(rowOrder(r), rowOrder(&t.Rows[j])) > 0 {
			win[key] = i
		}
	}
	if spanned {
		mp.spans[src] = sp
	}
	if mp.rows == 0 {
		return nil
	}
	type winner struct {
		row int
		key string
	}
	wins := make([]winner, 0, len(win))
	var afterBytes int
	for k, i := range win {
		wins = append(wins, winner{i, k})
		afterBytes += len(t.Rows[i].After)
	}
	// One string of every winning `after` (the decoder hands out its string
	// values as slices of it).
	var afters strings.Builder
	afters.Grow(afterBytes)
	for _, w := range wins {
		if r := &t.Rows[w.row]; r.Op != codec.OpDelete {
			afters.Write(r.After)
		}
	}
	text := afters.String()
	mp.changes = make([]mirrorChange, len(wins))
	sources := make(map[string]string) // interned source ids
	for n, w := range wins {
		r := &t.Rows[w.row]
		src, ok := sources[r.SourceID]
		if !ok {
			src = strings.Clone(r.SourceID)
			sources[src] = src
		}
		ch := &mp.changes[n]
		*ch = mirrorChange{key: w.key, source: src, entry: r.Sequence, eventMs: r.Timestamp, op: r.Op}
		if r.Op != codec.OpDelete {
			ch.after, text = text[:len(r.After)], text[len(r.After):]
		}
	}
	return mp
}

// maxFoldSizeHint caps the initial size of foldMirror's map (a table of a
// flush rarely has more distinct keys than that; the map grows past it).
const maxFoldSizeHint = 1 << 16

func rowOrder(r *sink.Row) orderKey { return orderKey{r.Timestamp, r.SourceID, r.Sequence} }

// mirrorState is the sink's mirror bookkeeping.
type mirrorState struct {
	mu      sync.Mutex
	indexes map[string]*mirrorIndex // by sanitised table name; guarded by Sink.mu
	totals  MirrorTotals
}

// MirrorTotals are counters of the mirror writer over the sink's life.
type MirrorTotals struct {
	Commits            int64 // mirror snapshots committed
	RowsWritten        int64 // rows written (winning inserts and updates)
	KeysDeleted        int64 // keys removed by a winning delete
	StaleChanges       int64 // changes older than the row the mirror held, not applied
	ExtraRows          int64 // rows whose `after` went to _extra
	SchemaUpdates      int64 // schema evolutions committed
	Compactions        int64 // mirror compactions committed
	DeleteFilesRemoved int64 // equality delete files dropped by compaction
	IndexKeys          int64 // keys in the in-memory order indexes now (a gauge)
	IndexTombstones    int64 // of which deleted keys (a gauge)
}

// MirrorTotals returns the mirror counters.
func (s *Sink) MirrorTotals() MirrorTotals {
	s.mirror.mu.Lock()
	defer s.mirror.mu.Unlock()
	return s.mirror.totals
}

func (s *Sink) countMirror(f func(*MirrorTotals)) {
	s.mirror.mu.Lock()
	defer s.mirror.mu.Unlock()
	f(&s.mirror.totals)
}

// MirrorIdentifier returns the Iceberg identifier of a CDC table's mirror
// (original or sanitised name).
func (s *Sink) MirrorIdentifier(name string) table.Identifier {
	return append(catalog.ToIdentifier(s.cfg.MirrorNamespace), sink.SanitizeName(name))
}

// LoadMirrorTable loads a CDC table's mirror table.
func (s *Sink) LoadMirrorTable(ctx context.Context, name string) (*table.Table, error) {
	ident := s.MirrorIdentifier(name)
	tbl, err := s.cat.LoadTable(ctx, ident)
	if err != nil {
		return nil, fmt.Errorf("iceberg: load mirror table %s: %w", strings.Join(ident, "."), err)
	}
	return s.wrap(tbl), nil
}

// ensureMirrorNamespace creates the mirror namespace when missing.
func (s *Sink) ensureMirrorNamespace(ctx context.Context) error {
	ns := catalog.ToIdentifier(s.cfg.MirrorNamespace)
	ok, err := s.cat.CheckNamespaceExists(ctx, ns)
	if err != nil {
		return fmt.Errorf("iceberg: check namespace %q: %w", s.cfg.MirrorNamespace, err)
	}
	if ok {
		return nil
	}
	err = s.cat.CreateNamespace(ctx, ns, map[string]string{"comment": "current state of the CDC tables, written by lakehouse"})
	if err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
		return fmt.Errorf("iceberg: create namespace %q: %w", s.cfg.MirrorNamespace, err)
	}
	return nil
}

// mirrorWatermarks returns the watermarks of a CDC table's mirror, none
// when the mirror does not exist yet.
func (s *Sink) mirrorWatermarks(ctx context.Context, name string) (map[string]sink.Watermark, error) {
	tbl, err := s.cat.LoadTable(ctx, s.MirrorIdentifier(name))
	if errors.Is(err, catalog.ErrNoSuchTable) {
		return map[string]sink.Watermark{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load mirror table: %w", err)
	}
	return watermarksFromProps(tbl.Properties())
}

// stageMirrorWatermarks is mirrorWatermarks once per commit, for Stage (a
// load reads and parses the table's metadata, as stageTable says).
func (s *Sink) stageMirrorWatermarks(ctx context.Context, name string) (map[string]sink.Watermark, error) {
	if wm, ok := s.stageMirrorMarks[name]; ok {
		return wm, nil
	}
	wm, err := s.mirrorWatermarks(ctx, name)
	if err != nil {
		return nil, err
	}
	if s.stageMirrorMarks == nil {
		s.stageMirrorMarks = make(map[string]map[string]sink.Watermark)
	}
	s.stageMirrorMarks[name] = wm
	return wm, nil
}

// loadOrCreateMirror loads a CDC table's mirror, creating it as needed.
func (s *Sink) loadOrCreateMirror(ctx context.Context, original string) (*table.Table, error) {
	ident := s.MirrorIdentifier(original)
	tbl, err := s.cat.LoadTable(ctx, ident)
	if errors.Is(err, catalog.ErrNoSuchTable) {
		spec := s.mirrorPartitionSpec(mirrorFieldRowID)
		tbl, err = s.cat.CreateTable(ctx, ident, s.mirrorPin(original).schemaFor(), catalog.WithProperties(s.mirrorTableProps(original)),
			catalog.WithPartitionSpec(&spec))
		if errors.Is(err, catalog.ErrTableAlreadyExists) {
			tbl, err = s.cat.LoadTable(ctx, ident)
		} else if err == nil {
			s.log.Info("iceberg mirror table created", "table", strings.Join(ident, "."), "cdc_table", original, "location", tbl.Location())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load mirror table %s: %w", strings.Join(ident, "."), err)
	}
	if got, ok := tbl.Properties()[PropOriginalName]; ok && got != original {
		return nil, fmt.Errorf("mirror table %s holds CDC table %q, not %q", strings.Join(ident, "."), got, original)
	}
	if tbl.Metadata().Version() < 2 {
		return nil, fmt.Errorf("mirror table %s is format v%d; equality deletes need v2", strings.Join(ident, "."), tbl.Metadata().Version())
	}
	return s.wrap(tbl), nil
}
