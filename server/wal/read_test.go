package wal

import (
	"context"
	"errors"
	"testing"
)

// readRange reads from..to with ReadRange; the records must stay valid.
func readRange(t *testing.T, l *Log, from, to LSN) []entry {
	t.Helper()
	var out []entry
	if err := l.ReadRange(from, to, func(lsn LSN, rec []byte) error {
		out = append(out, entry{lsn, rec}) // kept without a copy: ReadRange does not reuse it
		return nil
	}); err != nil {
		t.Fatalf("ReadRange(%d, %d): %v", from, to, err)
	}
	return out
}

// checkRanges reads every range of want (sliding windows of a few sizes,
// crossing segment boundaries) and the whole of it.
func checkRanges(t *testing.T, l *Log, want []entry) {
	t.Helper()
	checkEntries(t, readRange(t, l, want[0].lsn, want[len(want)-1].lsn), want)
	for _, w := range []int{1, 3, 7} {
		for i := 0; i+w <= len(want); i += w {
			checkEntries(t, readRange(t, l, want[i].lsn, want[i+w-1].lsn), want[i:i+w])
		}
	}
}

// TestReadRange: records written one by one and in group commits (coalesced
// into one write), across many segments, read back by range before and after
// a reopen; released and future records are not found.
func TestReadRange(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 8 << 10, NoSync: true}
	l := openLog(t, opts)
	want := appendN(t, l, 0, 20, varSize)
	// A group commit: many small records in one coalesced write.
	type pend struct {
		lsn  LSN
		rec  []byte
		done <-chan error
	}
	var ps []pend
	for i := 100; i < 140; i++ {
		rec := payload(i, 50+i%200)
		lsn, done := l.AppendAsync(rec)
		ps = append(ps, pend{lsn, rec, done})
	}
	for _, p := range ps {
		if err := <-p.done; err != nil {
			t.Fatal(err)
		}
		want = append(want, entry{p.lsn, p.rec})
	}
	want = append(want, appendN(t, l, 200, 20, varSize)...)
	if n := len(segmentFiles(t, dir)); n < 4 {
		t.Fatalf("%d segments, want several", n)
	}
	checkRanges(t, l, want)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkRanges(t, l, want)

	last := want[len(want)-1].lsn
	if err := l.ReadRange(last, last+1, func(LSN, []byte) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reading past the last record: %v, want ErrNotFound", err)
	}
	if err := l.Release(want[30].lsn); err != nil {
		t.Fatal(err)
	}
	if err := l.ReadRange(want[0].lsn, want[0].lsn, func(LSN, []byte) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reading a record of a deleted segment: %v, want ErrNotFound", err)
	}
	checkRanges(t, l, want[31:])
	want = append(want, appendN(t, l, 300, 5, varSize)...)
	checkRanges(t, l, want[31:])
	if _, err := l.Append(context.Background(), payload(1, 10)); err != nil {
		t.Fatal(err)
	}
}
