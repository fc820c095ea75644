package iceberg

import (
	"hash/maphash"
	"strings"
)

// keyTable maps keys to index entries without a pointer per key: the key
// bytes sit in large chunks, the entries in one slice, and the map goes
// from the key's 64-bit hash to the entry's number, so the garbage
// collector has nothing to scan in it. A map[string]indexEntry of a table
// of ever-new keys (W1's) holds a string per key, which every GC cycle
// marks: with millions of keys that scan was the mirror's largest CPU cost.
//
// A key whose hash another key holds goes to spill (keyed by the string:
// rare). Forgotten entries leave their bytes until more than half the
// entries are forgotten; then the table is rebuilt. Not safe for
// concurrent use.
type keyTable struct {
	slots  map[uint64]uint32 // key hash -> entry number
	spill  map[string]uint32 // keys whose hash slots holds for another key
	recs   []keyRecord
	chunks [][]byte // key bytes; each chunk's capacity is fixed when made
	dead   int      // forgotten entries in recs
	seed   maphash.Seed
	hash   func(seed maphash.Seed, key string) uint64 // maphash.String; tests force collisions
}

// keyRecord is an entry and where its key is.
type keyRecord struct {
	e      indexEntry
	chunk  uint32
	off    uint32
	keyLen uint32
	gone   bool
}

// keyChunkSize is the size of a keyTable's key chunks.
const keyChunkSize = 1 << 20

func newKeyTable() keyTable {
	return keyTable{slots: make(map[uint64]uint32), seed: maphash.MakeSeed(), hash: maphash.String}
}

func (t *keyTable) len() int { return len(t.recs) - t.dead }

func (t *keyTable) keyBytes(r *keyRecord) []byte {
	return t.chunks[r.chunk][r.off : r.off+r.keyLen]
}

// find returns the number of key's entry.
func (t *keyTable) find(key string) (uint32, bool) {
	if n, ok := t.slots[t.hash(t.seed, key)]; ok && string(t.keyBytes(&t.recs[n])) == key {
		return n, true
	}
	if len(t.spill) > 0 {
		n, ok := t.spill[key]
		return n, ok
	}
	return 0, false
}

func (t *keyTable) get(key string) (indexEntry, bool) {
	if n, ok := t.find(key); ok {
		return t.recs[n].e, true
	}
	return indexEntry{}, false
}

// put sets key's entry.
func (t *keyTable) put(key string, e indexEntry) {
	if n, ok := t.find(key); ok {
		t.recs[n].e = e
		return
	}
	n := uint32(len(t.recs))
	r := keyRecord{e: e, keyLen: uint32(len(key))}
	last := len(t.chunks) - 1
	if last < 0 || cap(t.chunks[last])-len(t.chunks[last]) < len(key) {
		t.chunks = append(t.chunks, make([]byte, 0, max(keyChunkSize, len(key))))
		last++
	}
	r.chunk, r.off = uint32(last), uint32(len(t.chunks[last]))
	t.chunks[last] = append(t.chunks[last], key...)
	t.recs = append(t.recs, r)
	h := t.hash(t.seed, key)
	if _, taken := t.slots[h]; !taken {
		t.slots[h] = n
		return
	}
	if t.spill == nil {
		t.spill = make(map[string]uint32)
	}
	t.spill[strings.Clone(key)] = n
}

// each calls f with every entry's key and entry; f may not change t.
func (t *keyTable) each(f func(key []byte, e indexEntry)) {
	for i := range t.recs {
		if r := &t.recs[i]; !r.gone {
			f(t.keyBytes(r), r.e)
		}
	}
}

// forget removes the entries drop selects and returns how many it removed.
func (t *keyTable) forget(drop func(indexEntry) bool) int {
	n := 0
	for i := range t.recs {
		r := &t.recs[i]
		if r.gone || !drop(r.e) {
			continue
		}
		key := string(t.keyBytes(r))
		if s, ok := t.slots[t.hash(t.seed, key)]; ok && s == uint32(i) {
			delete(t.slots, t.hash(t.seed, key))
		} else {
			delete(t.spill, key)
		}
		r.gone = true
		n++
	}
	t.dead += n
	if t.dead > len(t.recs)/2 {
		t.rebuild()
	}
	return n
}

// rebuild makes the table anew from its entries, dropping forgotten ones.
func (t *keyTable) rebuild() {
	next := keyTable{slots: make(map[uint64]uint32, t.len()), seed: t.seed, hash: t.hash}
	next.recs = make([]keyRecord, 0, t.len())
	t.each(func(key []byte, e indexEntry) { next.put(string(key), e) })
	*t = next
}
