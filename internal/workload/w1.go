// Package workload generates workload W1 of DESIGN.md, the one workload every
// throughput figure of this project is measured on, so numbers compare.
package workload

import (
	"strconv"

	"github.com/dot-do/lakehouse-rpc/codec"
)

// W1BatchSize is the number of entries in a W1 batch.
const W1BatchSize = 1000

// W1BaseTimestamp is the timestamp of entry 0, ms since the Unix epoch.
const W1BaseTimestamp = 1700000000000

var w1Tables = [...]string{"users", "orders", "items", "events", "sessions", "payments", "carts", "logs"}

// W1Tables returns the eight table names of W1.
func W1Tables() []string { return append([]string(nil), w1Tables[:]...) }

// AppendRow appends row(i) of W1 as JSON text to dst.
func AppendRow(dst []byte, i int64) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, i, 10)
	dst = append(dst, `,"name":"user-`...)
	dst = strconv.AppendInt(dst, i, 10)
	dst = append(dst, `","email":"user`...)
	dst = strconv.AppendInt(dst, i, 10)
	dst = append(dst, `@example.com","age":`...)
	dst = strconv.AppendInt(dst, 20+i%50, 10)
	dst = append(dst, `,"active":`...)
	dst = strconv.AppendBool(dst, i%2 == 0)
	dst = append(dst, `,"score":`...)
	// i*1.5 printed as JavaScript would: integral values without a fraction.
	dst = strconv.AppendFloat(dst, float64(i)*1.5, 'f', -1, 64)
	dst = append(dst, `,"city":"City `...)
	dst = strconv.AppendInt(dst, i%100, 10)
	dst = append(dst, `","tags":["a","b"]}`...)
	return dst
}

// Entry returns entry i (from 0) of W1. Its byte slices are freshly allocated.
func Entry(i int64) codec.Entry {
	e := codec.Entry{
		Sequence:  uint64(i + 1),
		Timestamp: uint64(W1BaseTimestamp + i),
		Table:     []byte(w1Tables[i%8]),
		RowID:     strconv.AppendInt([]byte("row-"), i, 10),
	}
	switch i % 10 {
	case 7, 8:
		e.Op = codec.OpUpdate
	case 9:
		e.Op = codec.OpDelete
	default:
		e.Op = codec.OpInsert
	}
	if e.Op != codec.OpDelete {
		e.After = AppendRow(nil, i)
	}
	if e.Op != codec.OpInsert {
		e.Before = AppendRow(nil, i-1)
	}
	return e
}

// PrefixTables renames the tables of W1 entries to prefix+name, all entries
// of one table sharing one slice. An empty prefix changes nothing.
func PrefixTables(es []codec.Entry, prefix string) {
	if prefix == "" {
		return
	}
	var names [len(w1Tables)][]byte
	for i, t := range w1Tables {
		names[i] = []byte(prefix + t)
	}
	for i := range es {
		es[i].Table = names[(es[i].Sequence-1)%uint64(len(w1Tables))]
	}
}

// Entries returns W1 entries [start, start+n).
func Entries(start, n int64) []codec.Entry {
	out := make([]codec.Entry, n)
	for k := range out {
		out[k] = Entry(start + int64(k))
	}
	return out
}

// Batch returns batch number seq (from 1) of W1 for source: entries
// [(seq-1)*1000, seq*1000).
func Batch(source string, seq uint64) *codec.Batch {
	return &codec.Batch{
		Timestamp: uint64(W1BaseTimestamp + int64(seq-1)*W1BatchSize),
		Sequence:  seq,
		SourceID:  []byte(source),
		Entries:   Entries(int64(seq-1)*W1BatchSize, W1BatchSize),
	}
}
