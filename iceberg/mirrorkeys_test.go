package iceberg

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestKeyTableMatchesMap: random puts, gets and forgets agree with a map,
// with the real hash and with one that makes most keys collide (spill),
// through rebuilds, and with keys longer than a chunk.
func TestKeyTableMatchesMap(t *testing.T) {
	for _, collide := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(3, 4))
		kt := newKeyTable()
		if collide {
			kt.hash = func(_ maphash.Seed, k string) uint64 { return uint64(len(k) % 3) }
		}
		ref := map[string]indexEntry{}
		key := func() string {
			if rng.IntN(500) == 0 {
				return strings.Repeat("L", keyChunkSize+rng.IntN(10))
			}
			return fmt.Sprintf("k%d", rng.IntN(2000))
		}
		for step := range 20_000 {
			switch op := rng.IntN(10); {
			case op < 6:
				k, e := key(), indexEntry{eventMs: uint64(step), entry: rng.Uint64N(10), deleted: rng.IntN(3) == 0}
				kt.put(k, e)
				ref[k] = e
			case op < 9:
				k := key()
				got, ok := kt.get(k)
				want, wok := ref[k]
				if ok != wok || got != want {
					t.Fatalf("collide %v step %d: get %q = %v %v, want %v %v", collide, step, k, got, ok, want, wok)
				}
			default:
				cut := uint64(step) - uint64(rng.IntN(3000))
				drop := func(e indexEntry) bool { return e.deleted && e.eventMs < cut }
				n, wantN := kt.forget(drop), 0
				for k, e := range ref {
					if drop(e) {
						delete(ref, k)
						wantN++
					}
				}
				if n != wantN {
					t.Fatalf("collide %v step %d: forgot %d, want %d", collide, step, n, wantN)
				}
			}
			if kt.len() != len(ref) {
				t.Fatalf("collide %v step %d: len %d, want %d", collide, step, kt.len(), len(ref))
			}
		}
		seen := map[string]bool{}
		kt.each(func(k []byte, e indexEntry) {
			if seen[string(k)] || ref[string(k)] != e {
				t.Fatalf("collide %v: each gave %q %v (twice: %v), want %v", collide, k, e, seen[string(k)], ref[string(k)])
			}
			seen[string(k)] = true
		})
		if len(seen) != len(ref) {
			t.Fatalf("collide %v: each gave %d keys, want %d", collide, len(seen), len(ref))
		}
	}
}
