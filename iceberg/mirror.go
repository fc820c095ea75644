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
	"github.com/dot-do/lakehouse-rpc/internal/pace"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// Mirror tables (Config.Mirror) hold the current state of each CDC table:
// one row per row_id with the latest `after`, typed columns, deleted rows
// gone. The mirror of cdc.<T> is <MirrorNamespace>.<T>, format v2, written
// with equality deletes on row_id.
//
// Stage folds each table's rows, above the mirror's own watermarks, to the
// winning change per key and keeps them in memory (the flush's byte slices
// die with Stage), dropping the changes that a part staged since the last
// commit beats or that beat them (mirrorgroup.go). CommitStaged commits the changelog table first, then its
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
//
// It lives from stage to commit (in direct mode up to a commit interval:
// millions of changes at a high rate of new keys), so its changes hold no
// pointers and the GC never scans them: offsets into two strings of the
// part (keys, afters) and an index into its small table of source ids.
// Commit materializes mirrorChange values for the winners alone
// (mergeMirrorParts).
type mirrorPart struct {
	changes []stagedChange // one per key
	keys    string         // the changes' keys are slices of it
	afters  string         // the changes' `after` texts are slices of it
	sources []string       // by stagedChange.source
	spans   map[string]span
	rows    int64
	// dropped counts the changes another part of the part's mirrorGroup
	// beats (stagedChange.dropped), until the group compacts the part.
	dropped int
}

// stagedChange is a mirrorChange as a part keeps it: without pointers (see
// mirrorPart). Lengths fit 32 bits: a row id or an `after` text is part of
// one batch frame (at most codec.MaxMessageSize) or one Arrow string of a
// change file.
type stagedChange struct {
	keyOff, afterOff int
	entry, eventMs   uint64
	keyLen, afterLen uint32
	source           uint32
	op               codec.Op
	// dropped: a change of another part of the same mirrorGroup beats
	// this one, which no commit applies.
	dropped bool
}

// len is the number of changes of p, dropped ones included.
func (p *mirrorPart) len() int { return len(p.changes) }

// drop marks p's change i as beaten (see mirrorGroup).
func (p *mirrorPart) drop(i int) {
	p.changes[i].dropped = true
	p.dropped++
}

// key is the key of p's change i.
func (p *mirrorPart) key(i int) string {
	c := &p.changes[i]
	return p.keys[c.keyOff : c.keyOff+int(c.keyLen)]
}

// order is the place of p's change i in the winner order.
func (p *mirrorPart) order(i int) orderKey {
	c := &p.changes[i]
	return orderKey{c.eventMs, p.sources[c.source], c.entry}
}

// change materializes p's change i (its strings are slices of p's).
func (p *mirrorPart) change(i int) mirrorChange {
	c := &p.changes[i]
	return mirrorChange{key: p.key(i), source: p.sources[c.source], entry: c.entry, eventMs: c.eventMs, op: c.op,
		after: p.afters[c.afterOff : c.afterOff+int(c.afterLen)]}
}

// dropChanges forgets p's changes (its spans and row count stay).
func (p *mirrorPart) dropChanges() {
	p.changes, p.keys, p.afters, p.sources = nil, "", "", nil
}

// sourceIndex interns the source ids of a part being built.
type sourceIndex struct {
	at   map[string]uint32
	list []string
}

func (x *sourceIndex) index(src string) uint32 {
	if i, ok := x.at[src]; ok {
		return i
	}
	if x.at == nil {
		x.at = make(map[string]uint32)
	}
	src = strings.Clone(src)
	i := uint32(len(x.list))
	x.at[src] = i
	x.list = append(x.list, src)
	return i
}

// foldMirror folds the rows of t above the mirror's watermarks have.
//
// It runs on every row a server stages, so it allocates per table, not per
// row: one string of every row id to find the winners by, then the winners
// copied out into one slice of changes, one string of their keys and one
// of their `after` texts (rows beaten later in the same table are never
// copied). The part lives until the commit, a stage's part beside every
// other stage's of the commit interval: it keeps the winners' keys only.
// Keeping every row id instead held 17 MB of a 248-MB heap at 150,000 W1
// entries/s, whose keys repeat. It yields to ingest through pacer (nil:
// never) every few thousand rows.
func foldMirror(t *sink.Table, have map[string]sink.Watermark, pacer *pace.Pacer) *mirrorPart {
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
		if i%foldPaceRows == foldPaceRows-1 {
			pacer.Yield()
		}
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
		if w, ok := win[key]; !ok || compareOrder(rowOrder(r), rowOrder(&t.Rows[w])) > 0 {
			win[key] = i
		}
	}
	if spanned {
		mp.spans[src] = sp
	}
	if mp.rows == 0 {
		return nil
	}
	wins := make([]int, 0, len(win))
	var keyBytes, afterBytes int
	for key, w := range win {
		wins = append(wins, w)
		keyBytes += len(key)
		afterBytes += len(t.Rows[w].After)
	}
	// One string of the winners' keys, one of their `after` texts.
	var keys, afters strings.Builder
	keys.Grow(keyBytes)
	afters.Grow(afterBytes)
	for _, w := range wins {
		r := &t.Rows[w]
		keys.Write(r.RowID)
		if r.Op != codec.OpDelete {
			afters.Write(r.After)
		}
	}
	mp.keys, mp.afters = keys.String(), afters.String()
	mp.changes = make([]stagedChange, len(wins))
	var sources sourceIndex
	keyOff, afterOff := 0, 0
	for n, w := range wins {
		r := &t.Rows[w]
		ch := &mp.changes[n]
		*ch = stagedChange{keyOff: keyOff, keyLen: uint32(len(r.RowID)), source: sources.index(r.SourceID),
			entry: r.Sequence, eventMs: r.Timestamp, op: r.Op, afterOff: afterOff}
		keyOff += len(r.RowID)
		if r.Op != codec.OpDelete {
			ch.afterLen = uint32(len(r.After))
			afterOff += len(r.After)
		}
	}
	mp.sources = sources.list
	return mp
}

// foldPaceRows is how many rows foldMirror folds between two calls of its
// pacer: at about 200 ns a row, well under pace.Interval.
const foldPaceRows = 2048

// maxFoldSizeHint caps the initial size of foldMirror's map (a table of a
// flush rarely has more distinct keys than that; the map grows past it).
const maxFoldSizeHint = 1 << 16

func rowOrder(r *sink.Row) orderKey { return orderKey{r.Timestamp, r.SourceID, r.Sequence} }

// mirrorState is the sink's mirror bookkeeping.
type mirrorState struct {
	// mu guards the fields below. A commit's tables run in parallel, so
	// the map is shared; each index in it is used only under its mirror
	// table's commit lock (commitMirror), never under mu.
	mu      sync.Mutex
	indexes map[string]*mirrorIndex // by sanitised table name
	totals  MirrorTotals
}

// index returns the table's loaded index (san: sanitised name).
func (m *mirrorState) index(san string) (*mirrorIndex, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	idx, ok := m.indexes[san]
	return idx, ok
}

// setIndex records the table's loaded index.
func (m *mirrorState) setIndex(san string, idx *mirrorIndex) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.indexes[san] = idx
}

// dropIndex forgets the table's index: it is loaded again from the table.
func (m *mirrorState) dropIndex(san string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.indexes, san)
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
	CompactionChecks   int64 // tables the background compaction measured
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

// mirrorMissing reports whether err is a mirror table's load failing
// because the table does not exist: the mirror namespace is created with
// its first table, so a catalog may also lack the namespace (the SQL
// catalog then says no such table, others no such namespace).
func mirrorMissing(err error) bool {
	return errors.Is(err, catalog.ErrNoSuchTable) || errors.Is(err, catalog.ErrNoSuchNamespace)
}

// ensureMirrorNamespace creates the mirror namespace when missing, before
// the first mirror table is created.
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

// stageMirrorWatermarks returns the watermarks of a CDC table's mirror,
// none when the mirror does not exist yet. The mirror is loaded once per
// commit, for Stage (a load reads and parses the table's metadata, as
// stageTable says), and kept for the commit (commitbase.go).
func (s *Sink) stageMirrorWatermarks(ctx context.Context, name string) (map[string]sink.Watermark, error) {
	tbl, ok := s.stageMirrorTables[name]
	if !ok {
		var err error
		tbl, err = s.cat.LoadTable(ctx, s.MirrorIdentifier(name))
		if mirrorMissing(err) {
			tbl, err = nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load mirror table: %w", err)
		}
		if s.stageMirrorTables == nil {
			s.stageMirrorTables = make(map[string]*table.Table)
		}
		s.stageMirrorTables[name] = tbl
	}
	if tbl == nil {
		return map[string]sink.Watermark{}, nil
	}
	return watermarksFromProps(tbl.Properties())
}

// loadOrCreateMirror loads a CDC table's mirror, creating it as needed.
// base, when its metadata is still the mirror's current one (stillCurrent),
// is used instead of a load.
func (s *Sink) loadOrCreateMirror(ctx context.Context, original string, base *table.Table) (*table.Table, error) {
	ident := s.MirrorIdentifier(original)
	var (
		tbl *table.Table
		err error
	)
	if s.stillCurrent(ctx, ident, base) {
		tbl = base
	} else {
		tbl, err = s.cat.LoadTable(ctx, ident)
	}
	if mirrorMissing(err) {
		if err := s.ensureMirrorNamespace(ctx); err != nil {
			return nil, err
		}
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
