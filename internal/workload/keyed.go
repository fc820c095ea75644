package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/mirrormodel"
)

// Defaults of the keyed workload (issue 16: batches of 10,000 changes, 60%
// updates, 20% inserts, 20% deletes, over 50,000 keys).
const (
	DefaultKeyedKeys      = 50_000
	DefaultKeyedSources   = 4
	DefaultKeyedBatchSize = 1000
	DefaultKeyedMaxSkew   = 2 * time.Second
	// DefaultKeyedNewFieldRate is the chance per change that its table
	// gains a new field (at most keyedMaxNewFields per table).
	DefaultKeyedNewFieldRate = 1.0 / 2000
	// DefaultKeyedTypeChangeRate is the chance per row that one of its
	// fields holds a value of another JSON kind.
	DefaultKeyedTypeChangeRate = 1.0 / 500
	// maxKeyedKeys bounds the key space (the generator keeps state per key).
	maxKeyedKeys = 50_000_000
)

var defaultKeyedTables = []string{"customers", "orders", "products"}

// Mix is the share of each operation; the shares need not sum to one.
type Mix struct{ Update, Insert, Delete float64 }

// DefaultMix is 60% updates, 20% inserts, 20% deletes.
var DefaultMix = Mix{Update: 0.6, Insert: 0.2, Delete: 0.2}

// KeyedConfig configures the keyed workload. The zero value is the default.
type KeyedConfig struct {
	Seed      uint64
	Keys      int      // key space over all tables (key i is in table i % len(Tables)); default 50,000
	Tables    []string // default customers, orders, products
	Sources   int      // sources writing overlapping keys; default 4
	BatchSize int      // entries per batch; default 1,000
	Mix       Mix      // default DefaultMix
	// MaxSkew bounds each source's fixed clock offset (uniform in
	// [-MaxSkew, +MaxSkew]), so event times go backwards across sources.
	// Default 2 s; negative: no skew.
	MaxSkew time.Duration
	// BaseTimeMs is the event time of the first change; default W1BaseTimestamp.
	BaseTimeMs int64
	// SourcePrefix names the sources <prefix>-<i>; default "keyed".
	SourcePrefix string
	// TablePrefix prefixes the table names (as bench's --table-prefix).
	TablePrefix string
	// NoNewFields and NoTypeChanges switch off schema evolution.
	NoNewFields, NoTypeChanges bool
	// NoModel skips keeping Model (a load generator does not need it).
	NoModel bool
}

func (c *KeyedConfig) normalize() error {
	if c.Keys == 0 {
		c.Keys = DefaultKeyedKeys
	}
	if c.Keys < 1 || c.Keys > maxKeyedKeys {
		return fmt.Errorf("keyed workload: keys %d out of range [1, %d]", c.Keys, maxKeyedKeys)
	}
	if len(c.Tables) == 0 {
		c.Tables = defaultKeyedTables
	}
	if c.Sources == 0 {
		c.Sources = DefaultKeyedSources
	}
	if c.Sources < 1 || c.Sources > 10_000 {
		return fmt.Errorf("keyed workload: sources %d out of range [1, 10000]", c.Sources)
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultKeyedBatchSize
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		return fmt.Errorf("keyed workload: batch size %d out of range [1, 1000000]", c.BatchSize)
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	if c.Mix.Update < 0 || c.Mix.Insert < 0 || c.Mix.Delete < 0 {
		return errors.New("keyed workload: mix shares must not be negative")
	}
	if c.Mix.Insert == 0 {
		return errors.New("keyed workload: mix needs inserts (every key starts absent)")
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = DefaultKeyedMaxSkew
	}
	if c.BaseTimeMs == 0 {
		c.BaseTimeMs = W1BaseTimestamp
	}
	if c.SourcePrefix == "" {
		c.SourcePrefix = "keyed"
	}
	return nil
}

// KeyedBatch is one batch of the keyed workload.
type KeyedBatch struct {
	Source   int    // index of the source
	SourceID string // its id
	Sequence uint64 // the source's batch number, from 1
	Entries  []codec.Entry
}

// keyState is the generator's view of one key: its newest change (by the
// contract's order), which is a delete when the key is dead.
type keyState struct {
	ver     mirrormodel.Version
	touched bool
	live    bool
	row     []byte // the newest after, for the next change's before
	pos     int32  // index in live or dead
	edits   int32  // changes that won, shown in the row
}

// Keyed generates the keyed workload: inserts, updates and deletes over a
// key space, deterministic from the seed. Updates and deletes touch live
// keys and inserts dead keys, as the generator sees them (the newest change
// of each key). Sources share the key space and their clocks are skewed, so
// a change can be older than the key's newest one and must lose.
//
// Until half the keys are live, updates are made as inserts (warm-up).
//
// Every history it makes has one mirror state whichever changes share a
// commit, as long as changes reach the writer in the order generated
// (Next's order): an insert of a deleted key is always newer than the delete
// (so the state does not depend on the writer's tombstone retention either).
// Model returns that state. Not safe for concurrent use.
type Keyed struct {
	cfg     KeyedConfig
	rng     *rand.Rand
	sources []keyedSource
	keys    []keyState
	live    []int32 // key indexes
	dead    []int32
	tables  []keyedTable
	model   *mirrormodel.Model
	tick    int64 // global clock, ms after BaseTimeMs
	rows    rowGen
}

type keyedSource struct {
	id      string
	skewMs  int64
	batch   uint64 // batches made
	lastSeq uint64 // entry sequences made
}

type keyedTable struct {
	name      []byte
	newFields int // extra fields added so far
}

// NewKeyed returns the generator of cfg.
func NewKeyed(cfg KeyedConfig) (*Keyed, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	g := &Keyed{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x6b65796564)),
		keys:  make([]keyState, cfg.Keys),
		dead:  make([]int32, cfg.Keys),
		model: mirrormodel.New(),
	}
	for i := range g.keys {
		g.dead[i], g.keys[i].pos = int32(i), int32(i)
	}
	for i := range cfg.Sources {
		s := keyedSource{id: cfg.SourcePrefix + "-" + strconv.Itoa(i)}
		if cfg.MaxSkew > 0 {
			ms := cfg.MaxSkew.Milliseconds()
			s.skewMs = g.rng.Int64N(2*ms+1) - ms
		}
		g.sources = append(g.sources, s)
	}
	for _, t := range cfg.Tables {
		g.tables = append(g.tables, keyedTable{name: []byte(cfg.TablePrefix + t)})
	}
	g.rows = newRowGen(!cfg.NoTypeChanges)
	return g, nil
}

// Sources returns the source ids.
func (g *Keyed) Sources() []string {
	out := make([]string, len(g.sources))
	for i, s := range g.sources {
		out[i] = s.id
	}
	return out
}

// Tables returns the table names, prefixed.
func (g *Keyed) Tables() []string {
	out := make([]string, len(g.tables))
	for i, t := range g.tables {
		out[i] = string(t.name)
	}
	return out
}

// Model returns the expected mirror state after every batch made so far
// (empty with NoModel). It is the generator's own model: do not change it.
func (g *Keyed) Model() *mirrormodel.Model { return g.model }

// Live returns the number of live keys.
func (g *Keyed) Live() int { return len(g.live) }

// Next makes the next batch, of a source drawn at random.
func (g *Keyed) Next() KeyedBatch { return g.NextFor(g.rng.IntN(len(g.sources))) }

// NextFor makes the next batch of source src (0 <= src < Sources).
func (g *Keyed) NextFor(src int) KeyedBatch {
	s := &g.sources[src]
	s.batch++
	b := KeyedBatch{Source: src, SourceID: s.id, Sequence: s.batch, Entries: make([]codec.Entry, g.cfg.BatchSize)}
	for i := range b.Entries {
		g.tick++
		s.lastSeq++
		g.change(s, &b.Entries[i])
	}
	if !g.cfg.NoModel {
		g.model.CommitBatch(s.id, b.Entries)
	}
	return b
}

// change fills e with the next change of source s.
func (g *Keyed) change(s *keyedSource, e *codec.Entry) {
	now := mirrormodel.Version{EventTimeMs: g.cfg.BaseTimeMs + g.tick + s.skewMs, SourceID: s.id, EntrySeq: s.lastSeq}
	m := g.cfg.Mix
	r := g.rng.Float64() * (m.Update + m.Insert + m.Delete)
	op := codec.OpInsert
	switch {
	case r < m.Update:
		op = codec.OpUpdate
	case r < m.Update+m.Delete:
		op = codec.OpDelete
	}
	if op == codec.OpUpdate && len(g.live) < len(g.keys)/2 {
		// Warm-up: inserts and deletes balance, so a key space that
		// starts empty would stay nearly empty; fill half of it first.
		op = codec.OpInsert
	}
	if op != codec.OpInsert && len(g.live) == 0 {
		op = codec.OpInsert
	}
	if op == codec.OpInsert && len(g.dead) == 0 {
		op = codec.OpUpdate
	}
	var k int32
	if op == codec.OpInsert {
		k = g.pickDead(now)
		if t := &g.keys[k]; t.touched && t.ver.Compare(now) >= 0 {
			// The tombstone is newer than this source's clock: the
			// insert must still be newer, or it would lose to the delete
			// (see Keyed).
			now.EventTimeMs = t.ver.EventTimeMs + 1
		}
	} else {
		k = g.live[g.rng.IntN(len(g.live))]
	}
	ks := &g.keys[k]
	tb := &g.tables[int(k)%len(g.tables)]
	if !g.cfg.NoNewFields && tb.newFields < maxNewFields && g.rng.Float64() < DefaultKeyedNewFieldRate {
		tb.newFields++
	}
	*e = codec.Entry{
		Sequence:  now.EntrySeq,
		Timestamp: uint64(now.EventTimeMs),
		Op:        op,
		Table:     tb.name,
		RowID:     strconv.AppendInt([]byte("key-"), int64(k), 10),
	}
	if op != codec.OpInsert {
		e.Before = ks.row
	}
	if op != codec.OpDelete {
		e.After = g.rows.row(g.rng, int64(k), ks.edits+1, now.EventTimeMs, tb.newFields)
	}
	if ks.touched && ks.ver.Compare(now) > 0 {
		return // older than the key's newest change: it loses
	}
	ks.touched, ks.ver = true, now
	if op == codec.OpDelete {
		ks.row = nil
		g.move(k, false)
		return
	}
	ks.row, ks.edits = e.After, ks.edits+1
	g.move(k, true)
}

// pickDead draws a dead key, preferring one whose delete is older than now
// (a few draws, then the last one drawn).
func (g *Keyed) pickDead(now mirrormodel.Version) int32 {
	var k int32
	for range 4 {
		k = g.dead[g.rng.IntN(len(g.dead))]
		if t := &g.keys[k]; !t.touched || t.ver.Compare(now) < 0 {
			break
		}
	}
	return k
}

// move puts key k in the live or the dead set.
func (g *Keyed) move(k int32, live bool) {
	ks := &g.keys[k]
	if ks.live == live {
		return
	}
	from, to := &g.dead, &g.live
	if ks.live {
		from, to = &g.live, &g.dead
	}
	last := (*from)[len(*from)-1]
	(*from)[ks.pos] = last
	g.keys[last].pos = ks.pos
	*from = (*from)[:len(*from)-1]
	ks.pos = int32(len(*to))
	*to = append(*to, k)
	ks.live = live
}
