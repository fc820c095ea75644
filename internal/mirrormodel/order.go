// Package mirrormodel is the in-memory model of the mirror tables
// (docs: the mirror contract): the current state of every CDC table, one row
// per row_id, computed exactly as the contract orders changes. Tests compare
// a mirror table read back from Iceberg with it.
package mirrormodel

import (
	"cmp"
	"strings"
)

// Version orders the changes of one key across sources: the change with the
// greatest (event time in ms, source id as bytes, entry sequence), compared
// in that order, wins.
type Version struct {
	EventTimeMs int64
	SourceID    string
	EntrySeq    uint64
}

// Compare returns -1, 0 or +1 as v is older than, the same as or newer than w.
func (v Version) Compare(w Version) int {
	if c := cmp.Compare(v.EventTimeMs, w.EventTimeMs); c != 0 {
		return c
	}
	// Go strings compare as bytes, which is what the contract asks for.
	if c := strings.Compare(v.SourceID, w.SourceID); c != 0 {
		return c
	}
	return cmp.Compare(v.EntrySeq, w.EntrySeq)
}
