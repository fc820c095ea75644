package iceberg

import (
	"fmt"
	"hash/maphash"

	"github.com/dot-do/lakehouse-rpc/internal/pace"
)

// A server stages about every second and commits every commit interval, so
// the mirror parts of a table wait for their commit beside each other: with
// direct commits thirty or so of them. Each holds its own winner per key,
// `after` text included, and keys that change all the time (counters,
// sessions, a table's hottest rows) are in every one: at 100,000 W1
// entries/s the parts were 34 MB of a 110-MB live heap at the end of an
// interval, most of it changes a later part supersedes.
//
// A mirrorGroup holds the parts of one table staged between two
// CommitStaged calls (direct commits only: the elected committer's parts go
// to change files) and, as each part joins, drops every change that another
// part of the group beats, so the group holds about one change per key. The
// commit applies the winner per key across its parts (mergeMirrorParts):
// with every part of a group given, dropping a beaten change changes
// nothing. A commit given only some of a group's parts would miss winners,
// so CommitStaged refuses it (checkGroupsWhole): a server commits every
// flush it staged, and a fenced commit, after which it stages again, ends
// the groups as any commit does.
//
// Dropping is an optimisation only: a change whose key shares its hash with
// another key is kept, and the commit picks the winner as before.

// mirrorGroup is a table's mirror parts staged since the last CommitStaged.
type mirrorGroup struct {
	seed  maphash.Seed
	parts []*mirrorPart
	// live locates each key's live change, by the key's hash; a key whose
	// hash another key holds is not in it (its changes are all kept).
	live map[uint64]groupLoc
}

// groupLoc is a change of a group: part index, change index.
type groupLoc struct{ part, i int32 }

func newMirrorGroup() *mirrorGroup {
	return &mirrorGroup{seed: maphash.MakeSeed(), live: make(map[uint64]groupLoc)}
}

// add makes p (one staged table's part, at most one change per key) a part
// of g and drops the changes that p beats in g's parts, and those of p that
// g's parts beat. It yields to ingest through pacer every foldPaceRows
// changes.
func (g *mirrorGroup) add(p *mirrorPart, pacer *pace.Pacer) {
	pi := int32(len(g.parts))
	g.parts = append(g.parts, p)
	touched := map[int32]bool{pi: true}
	for i := range p.changes {
		if i%foldPaceRows == foldPaceRows-1 {
			pacer.Yield()
		}
		key := p.key(i)
		h := maphash.String(g.seed, key)
		at, ok := g.live[h]
		if !ok {
			g.live[h] = groupLoc{pi, int32(i)}
			continue
		}
		q := g.parts[at.part]
		if q.key(int(at.i)) != key {
			continue // another key's hash: both kept
		}
		if compareOrder(p.order(i), q.order(int(at.i))) > 0 {
			q.drop(int(at.i))
			touched[at.part] = true
			g.live[h] = groupLoc{pi, int32(i)}
		} else {
			p.drop(i)
		}
	}
	for qi := range touched {
		if q := g.parts[qi]; 2*q.dropped > len(q.changes) {
			g.compact(qi)
		}
	}
}

// compact rewrites part qi with its live changes only, so that what the
// dropped ones held is freed.
func (g *mirrorGroup) compact(qi int32) {
	q := g.parts[qi]
	var keyBytes, afterBytes int
	for i := range q.changes {
		if c := &q.changes[i]; !c.dropped {
			keyBytes += int(c.keyLen)
			afterBytes += int(c.afterLen)
		}
	}
	var b partBuilder
	b.grow(len(q.changes)-q.dropped, keyBytes, afterBytes)
	for i := range q.changes {
		if q.changes[i].dropped {
			continue
		}
		if h := maphash.String(g.seed, q.key(i)); g.live[h] == (groupLoc{qi, int32(i)}) {
			g.live[h] = groupLoc{qi, int32(len(b.changes))}
		}
		b.add(q.change(i))
	}
	b.finish(q)
	q.dropped = 0
}

// changes is the number of changes g's parts hold.
func (g *mirrorGroup) changes() int {
	n := 0
	for _, p := range g.parts {
		n += len(p.changes) - p.dropped
	}
	return n
}

// groupStaged makes the mirror parts of st, a flush just staged, parts of
// their tables' groups (direct commits only). Called with s.mu held.
func (s *Sink) groupStaged(st *staged) {
	if s.cfg.ElectedCommitter {
		return
	}
	var pacer pace.Pacer
	for _, t := range st.tables {
		if t.mirror == nil || len(t.mirror.changes) == 0 {
			continue
		}
		g := s.mirrorGroups[t.name]
		if g == nil {
			g = newMirrorGroup()
			if s.mirrorGroups == nil {
				s.mirrorGroups = make(map[string]*mirrorGroup)
			}
			s.mirrorGroups[t.name] = g
		}
		g.add(t.mirror, &pacer)
		t.group = g
	}
}

// checkGroupsWhole reports an error unless sts hold every part of each
// mirror group they hold a part of (see mirrorGroup).
func checkGroupsWhole(sts []*staged) error {
	given := make(map[*mirrorGroup]int)
	for _, st := range sts {
		for _, t := range st.tables {
			if t.group != nil {
				given[t.group]++
			}
		}
	}
	for _, st := range sts {
		for _, t := range st.tables {
			if g := t.group; g != nil && given[g] != len(g.parts) {
				return fmt.Errorf("iceberg: CommitStaged: table %q's mirror changes were folded across %d staged flushes and %d of them are given: "+
					"commit every flush staged since the last commit together", t.name, len(g.parts), given[g])
			}
		}
	}
	return nil
}
