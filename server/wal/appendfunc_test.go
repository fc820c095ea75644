package wal

import (
	"errors"
	"testing"
)

// TestAppendAsyncFunc: records filled in place replay byte for byte, across
// segments and a reopen, interleaved with copied ones; a record too large is
// refused without calling fill.
func TestAppendAsyncFunc(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 8 << 10})
	var chans []<-chan error
	var want []entry
	for i := range 60 {
		rec := payload(i, varSize(i))
		var lsn LSN
		var ch <-chan error
		if i%3 == 0 {
			lsn, ch = l.AppendAsync(rec)
		} else {
			lsn, ch = l.AppendAsyncFunc(len(rec), func(dst []byte) {
				if len(dst) != len(rec) {
					t.Errorf("record %d: fill got %d bytes, want %d", i, len(dst), len(rec))
				}
				copy(dst, rec)
			})
		}
		chans = append(chans, ch)
		want = append(want, entry{lsn, rec})
	}
	for i, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	checkEntries(t, replayAll(t, l), want)

	called := false
	if _, ch := l.AppendAsyncFunc(MaxRecordBytes+1, func([]byte) { called = true }); !errors.Is(<-ch, ErrTooLarge) || called {
		t.Errorf("oversized record: fill called %v", called)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, replayAll(t, openLog(t, Options{Dir: dir, SegmentBytes: 8 << 10})), want)
}
