package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quietLogger discards logs so expected torn-tail warnings don't clutter
// test output.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openLog(t *testing.T, opts Options) *Log {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// payload returns deterministic content for record i (size varies with i).
func payload(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	copy(b, fmt.Sprintf("rec-%d|", i))
	return b
}

type entry struct {
	lsn LSN
	rec []byte
}

func appendN(t *testing.T, l *Log, from, n int, size func(i int) int) []entry {
	t.Helper()
	var out []entry
	for i := from; i < from+n; i++ {
		rec := payload(i, size(i))
		lsn, err := l.Append(context.Background(), rec)
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		out = append(out, entry{lsn, rec})
	}
	return out
}

func replayAll(t *testing.T, l *Log) []entry {
	t.Helper()
	var out []entry
	err := l.Replay(func(lsn LSN, rec []byte) error {
		out = append(out, entry{lsn, slices.Clone(rec)})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return out
}

func checkEntries(t *testing.T, got, want []entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].lsn != want[i].lsn || !bytes.Equal(got[i].rec, want[i].rec) {
			t.Fatalf("record %d: got LSN %d (%d bytes), want LSN %d (%d bytes)",
				i, got[i].lsn, len(got[i].rec), want[i].lsn, len(want[i].rec))
		}
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// frameOffsets parses a segment file's frame boundaries without verifying.
func frameOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := 0; off+headerSize <= len(b); {
		offs = append(offs, int64(off))
		off += headerSize + int(binary.LittleEndian.Uint32(b[off:]))
	}
	return offs
}

func varSize(i int) int { return 100 + (i*397)%1900 }

func TestRoundTripAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
	l := openLog(t, opts)
	want := appendN(t, l, 0, 60, varSize)
	for i, e := range want {
		if e.lsn != LSN(i+1) {
			t.Fatalf("record %d got LSN %d, want %d", i, e.lsn, i+1)
		}
	}
	checkEntries(t, replayAll(t, l), want)
	st := l.Stats()
	if st.Segments < 4 || st.Appends != 60 || st.LastLSN != 60 || st.FirstLSN != 1 || st.MaxBytes != 1<<20 {
		t.Fatalf("unexpected stats %+v", st)
	}
	if files := segmentFiles(t, dir); len(files) != st.Segments || filepath.Base(files[0]) != "00000000000000000001.wal" {
		t.Fatalf("segment files %v, stats %+v", files, st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want)
	if st2 := l.Stats(); st2.SizeBytes != st.SizeBytes || st2.Segments != st.Segments || st2.LastLSN != 60 {
		t.Fatalf("after reopen stats %+v, before %+v", st2, st)
	}
	want = append(want, appendN(t, l, 60, 20, varSize)...)
	if want[len(want)-1].lsn != 80 {
		t.Fatalf("LSN after reopen %d, want 80", want[len(want)-1].lsn)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want)
}

func TestLargeAndEmptyRecords(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), SegmentBytes: 1 << 20, MaxBytes: 64 << 20})
	sizes := []int{0, MaxRecordBytes, 1, 3 << 20}
	want := appendN(t, l, 0, len(sizes), func(i int) int { return sizes[i] })
	checkEntries(t, replayAll(t, l), want)
	if _, err := l.Append(context.Background(), make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized record: err %v, want ErrTooLarge", err)
	}
}

func TestTornTail(t *testing.T) {
	const n = 30
	type mutation func(t *testing.T, path string, lastOff, size int64)
	truncateAt := func(rel func(recLen int64) int64) mutation {
		return func(t *testing.T, path string, lastOff, size int64) {
			t.Helper()
			if err := os.Truncate(path, lastOff+rel(size-lastOff)); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendBytes := func(b []byte) mutation {
		return func(t *testing.T, path string, _, _ int64) {
			t.Helper()
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	flipAt := func(rel func(recLen int64) int64) mutation {
		return func(t *testing.T, path string, lastOff, size int64) {
			t.Helper()
			flipByte(t, path, lastOff+rel(size-lastOff))
		}
	}
	garbage := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, 0x42}, 37)
	cases := []struct {
		name     string
		mutate   mutation
		keepLast bool // the last full record survives (only junk after it)
	}{
		{"cut inside length", truncateAt(func(int64) int64 { return 2 }), false},
		{"cut inside CRC", truncateAt(func(int64) int64 { return 6 }), false},
		{"cut inside LSN", truncateAt(func(int64) int64 { return 15 }), false},
		{"cut after header", truncateAt(func(int64) int64 { return headerSize }), false},
		{"cut mid payload", truncateAt(func(l int64) int64 { return headerSize + (l-headerSize)/2 }), false},
		{"cut last byte", truncateAt(func(l int64) int64 { return l - 1 }), false},
		{"CRC mismatch in last payload", flipAt(func(l int64) int64 { return l - 1 }), false},
		{"garbage appended", appendBytes(garbage), true},
		{"zeros appended", appendBytes(make([]byte, 4096)), true},
		{"partial header appended", appendBytes([]byte{1, 2, 3}), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
			l := openLog(t, opts)
			want := appendN(t, l, 0, n, varSize)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := segmentFiles(t, dir)
			last := files[len(files)-1]
			offs := frameOffsets(t, last)
			fi, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			lastOff := offs[len(offs)-1]
			tc.mutate(t, last, lastOff, fi.Size())

			l = openLog(t, opts)
			wantSize := fi.Size()
			if !tc.keepLast {
				want = want[:n-1]
				wantSize = lastOff
			}
			checkEntries(t, replayAll(t, l), want)
			if fi, err := os.Stat(last); err != nil || fi.Size() != wantSize {
				t.Fatalf("last segment size after recovery %d (%v), want %d", fi.Size(), err, wantSize)
			}
			if got := l.Stats().LastLSN; got != want[len(want)-1].lsn {
				t.Fatalf("LastLSN %d, want %d", got, want[len(want)-1].lsn)
			}
			more := appendN(t, l, 1000, 5, varSize)
			if more[0].lsn != want[len(want)-1].lsn+1 {
				t.Fatalf("next LSN %d, want %d", more[0].lsn, want[len(want)-1].lsn+1)
			}
			want = append(want, more...)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, opts)
			checkEntries(t, replayAll(t, l), want)
		})
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruption(t *testing.T) {
	type target struct {
		path string
		off  int64 // reported offset expected
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, files []string) target
	}{
		{"payload byte in middle of last segment", func(t *testing.T, files []string) target {
			p := files[len(files)-1]
			offs := frameOffsets(t, p)
			flipByte(t, p, offs[1]+headerSize+10)
			return target{p, offs[1]}
		}},
		{"length field in middle of last segment", func(t *testing.T, files []string) target {
			p := files[len(files)-1]
			offs := frameOffsets(t, p)
			flipByte(t, p, offs[1]+1)
			return target{p, offs[1]}
		}},
		{"LSN field in middle of last segment", func(t *testing.T, files []string) target {
			p := files[len(files)-1]
			offs := frameOffsets(t, p)
			flipByte(t, p, offs[0]+8)
			return target{p, offs[0]}
		}},
		{"last record of a non-last segment", func(t *testing.T, files []string) target {
			p := files[1]
			offs := frameOffsets(t, p)
			fi, _ := os.Stat(p)
			flipByte(t, p, fi.Size()-1)
			return target{p, offs[len(offs)-1]}
		}},
		{"truncated non-last segment", func(t *testing.T, files []string) target {
			p := files[0]
			offs := frameOffsets(t, p)
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()-3); err != nil {
				t.Fatal(err)
			}
			return target{p, offs[len(offs)-1]}
		}},
		{"missing middle segment", func(t *testing.T, files []string) target {
			if err := os.Remove(files[1]); err != nil {
				t.Fatal(err)
			}
			return target{files[2], 0}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
			l := openLog(t, opts)
			appendN(t, l, 0, 40, varSize)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := segmentFiles(t, dir)
			if len(files) < 4 {
				t.Fatalf("want >= 4 segments, got %d", len(files))
			}
			want := tc.mutate(t, files)
			l, err := Open(Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20, Logger: quietLogger()})
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded on a corrupt log")
			}
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("Open error %v, want *CorruptError wrapping ErrCorrupt", err)
			}
			if ce.Segment != want.path || ce.Offset != want.off {
				t.Fatalf("corruption reported at %s:%d, want %s:%d (%v)", ce.Segment, ce.Offset, want.path, want.off, err)
			}
		})
	}
}

func TestCapFullThenRelease(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 16 << 10
	l := openLog(t, Options{Dir: dir, SegmentBytes: 4 << 10, MaxBytes: maxBytes})
	rec := payload(1, 1000)
	var last LSN
	for {
		lsn, err := l.Append(context.Background(), rec)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = lsn
	}
	st := l.Stats()
	if st.SizeBytes > maxBytes || st.SizeBytes+int64(headerSize+len(rec)) <= maxBytes || st.LastLSN != last {
		t.Fatalf("full log stats %+v", st)
	}
	// Still full: nothing was written by the failed attempt.
	if _, err := l.Append(context.Background(), rec); !errors.Is(err, ErrFull) {
		t.Fatalf("second append: %v, want ErrFull", err)
	}
	if st2 := l.Stats(); st2.SizeBytes != st.SizeBytes || st2.LastLSN != st.LastLSN {
		t.Fatalf("failed append changed stats: %+v -> %+v", st, st2)
	}
	if err := l.Release(last); err != nil {
		t.Fatal(err)
	}
	st3 := l.Stats()
	if st3.Segments != 1 || st3.SizeBytes >= st.SizeBytes || st3.ReleasedLSN != last {
		t.Fatalf("after release stats %+v", st3)
	}
	lsn, err := l.Append(context.Background(), rec)
	if err != nil || lsn != last+1 {
		t.Fatalf("append after release: %d, %v", lsn, err)
	}
	// The fully released active segment was rolled away and deleted.
	if files := segmentFiles(t, dir); len(files) != 1 || filepath.Base(files[0]) != segmentName(last+1) {
		t.Fatalf("segments after roll %v", files)
	}
}

func TestReleaseDeletesAndPersists(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
	l := openLog(t, opts)
	want := appendN(t, l, 0, 50, varSize)
	before := segmentFiles(t, dir)

	// Release up to the middle of the third segment.
	third := frameOffsets(t, before[2])
	var firstOfThird uint64
	fmt.Sscanf(filepath.Base(before[2]), "%020d", &firstOfThird)
	upTo := LSN(firstOfThird) + LSN(len(third))/2
	if err := l.Release(upTo); err != nil {
		t.Fatal(err)
	}
	after := segmentFiles(t, dir)
	if !slices.Equal(after, before[2:]) {
		t.Fatalf("segments after release %v, want %v", after, before[2:])
	}
	st := l.Stats()
	if st.ReleasedLSN != upTo || st.Segments != len(after) || st.FirstLSN != LSN(firstOfThird) {
		t.Fatalf("stats %+v", st)
	}
	checkEntries(t, replayAll(t, l), want[upTo:])

	// Idempotent and monotonic.
	for _, lsn := range []LSN{upTo, upTo - 3, 0} {
		if err := l.Release(lsn); err != nil {
			t.Fatalf("Release(%d): %v", lsn, err)
		}
	}
	if got := l.Stats().ReleasedLSN; got != upTo {
		t.Fatalf("released went to %d, want %d", got, upTo)
	}
	if err := l.Release(51); err == nil {
		t.Fatal("Release beyond LastLSN succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(upTo + 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Release after Close: %v", err)
	}

	// The released point survives restart even inside a partial segment.
	l = openLog(t, opts)
	if got := l.Stats().ReleasedLSN; got != upTo {
		t.Fatalf("released after reopen %d, want %d", got, upTo)
	}
	checkEntries(t, replayAll(t, l), want[upTo:])

	// Release everything, append, reopen: only the new record replays.
	if err := l.Release(50); err != nil {
		t.Fatal(err)
	}
	more := appendN(t, l, 100, 1, varSize)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), more)
	if files := segmentFiles(t, dir); len(files) != 1 {
		t.Fatalf("segments %v, want only the new one", files)
	}
}

func TestReplayCallbackError(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), NoSync: true})
	appendN(t, l, 0, 5, varSize)
	stop := errors.New("stop")
	calls := 0
	err := l.Replay(func(LSN, []byte) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("Replay returned %v after %d calls", err, calls)
	}
}

func TestConcurrentAppends(t *testing.T) {
	const goroutines, perG = 16, 40
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 256 << 10, MaxBytes: 64 << 20})
	var (
		mu    sync.Mutex
		byLSN = map[LSN][]byte{}
		wg    sync.WaitGroup
	)
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				rec := payload(g*1000+i, 500+(g*perG+i)%3000)
				lsn, err := l.Append(context.Background(), rec)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if _, dup := byLSN[lsn]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("duplicate LSN %d", lsn)
					return
				}
				byLSN[lsn] = rec
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = goroutines * perG
	if len(byLSN) != total {
		t.Fatalf("%d distinct LSNs, want %d", len(byLSN), total)
	}
	want := make([]entry, 0, total)
	for lsn := LSN(1); lsn <= total; lsn++ {
		rec, ok := byLSN[lsn]
		if !ok {
			t.Fatalf("LSN %d missing: LSNs not contiguous", lsn)
		}
		want = append(want, entry{lsn, rec})
	}
	st := l.Stats()
	t.Logf("appends=%d syncs=%d (%.1f appends/fsync) segments=%d", st.Appends, st.Syncs, float64(st.Appends)/float64(st.Syncs), st.Segments)
	if st.Appends != total || st.Syncs >= st.Appends {
		t.Fatalf("no group commit: %+v", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, Options{Dir: dir, SegmentBytes: 256 << 10, MaxBytes: 64 << 20})
	checkEntries(t, replayAll(t, l), want)
}

func TestCloseWithPendingAppends(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 64 << 10})
	const n = 64
	type result struct {
		lsn LSN
		rec []byte
		err error
	}
	results := make(chan result, n)
	start := make(chan struct{})
	for i := range n {
		go func() {
			<-start
			rec := payload(i, 2000)
			lsn, err := l.Append(context.Background(), rec)
			results <- result{lsn, rec, err}
		}()
	}
	close(start)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var ok []entry
	for range n {
		r := <-results
		switch {
		case r.err == nil:
			ok = append(ok, entry{r.lsn, r.rec})
		case errors.Is(r.err, ErrClosed):
		default:
			t.Fatalf("Append during Close: %v", r.err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, ch := l.AppendAsync([]byte("x")); !errors.Is(<-ch, ErrClosed) {
		t.Fatal("AppendAsync after Close did not fail with ErrClosed")
	}
	if err := l.Replay(func(LSN, []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Replay after Close: %v", err)
	}
	// Every acknowledged append is durable and replays; LSNs are 1..len(ok).
	slices.SortFunc(ok, func(a, b entry) int { return int(a.lsn) - int(b.lsn) })
	for i, e := range ok {
		if e.lsn != LSN(i+1) {
			t.Fatalf("acked LSNs not contiguous at %d: %d", i, e.lsn)
		}
	}
	l = openLog(t, Options{Dir: dir, SegmentBytes: 64 << 10})
	checkEntries(t, replayAll(t, l), ok)
}

func TestAppendContext(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), NoSync: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Append(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with canceled ctx: %v", err)
	}
	lsn, err := l.Append(context.Background(), []byte("y"))
	if err != nil || lsn != 1 {
		t.Fatalf("Append after canceled attempt: %d, %v (canceled attempt must not consume an LSN)", lsn, err)
	}
}

func TestAppendAsync(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir()})
	var chans []<-chan error
	var want []entry
	for i := range 20 {
		rec := payload(i, 300)
		lsn, ch := l.AppendAsync(rec)
		rec[0] ^= 0xff // caller may reuse rec at once
		rec[0] ^= 0xff
		chans = append(chans, ch)
		want = append(want, entry{lsn, rec})
	}
	for i, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatalf("async append %d: %v", i, err)
		}
	}
	checkEntries(t, replayAll(t, l), want)
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
	dir := filepath.Join(t.TempDir(), "nested", "wal")
	l := openLog(t, Options{Dir: dir, MaxBytes: 1 << 20})
	if l.opts.SegmentBytes != 256<<10 {
		t.Fatalf("SegmentBytes %d, want clamped to MaxBytes/4", l.opts.SegmentBytes)
	}
	st := l.Stats()
	if st.SizeBytes != 0 || st.Segments != 0 || st.FirstLSN != 0 || st.LastLSN != 0 {
		t.Fatalf("empty log stats %+v", st)
	}
	if got := replayAll(t, l); len(got) != 0 {
		t.Fatalf("empty log replayed %d records", len(got))
	}
}

func TestAppendCanceledWhileQueued(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	var all []entry
	canceled := 0
	for i := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		// Keep the writer busy so the record is likely still queued when
		// the context is canceled.
		for j := range 4 {
			rec := payload(1000*i+j, 50<<10)
			lsn, _ := l.AppendAsync(rec)
			all = append(all, entry{lsn, rec})
		}
		rec := payload(1000*i+999, 1000)
		go cancel()
		lsn, err := l.Append(ctx, rec)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled):
			canceled++
		default:
			t.Fatalf("Append: %v", err)
		}
		if lsn == 0 {
			// Canceled before it was queued: not written.
			continue
		}
		all = append(all, entry{lsn, rec})
	}
	t.Logf("%d of 30 appends returned context.Canceled", canceled)
	// Canceled appends that had an LSN are still written: Close waits for
	// them and they replay after reopen.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(all, func(a, b entry) int { return int(a.lsn) - int(b.lsn) })
	l = openLog(t, Options{Dir: dir})
	checkEntries(t, replayAll(t, l), all)
}

func TestConcurrentAppendReleaseReplay(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), SegmentBytes: 8 << 10, MaxBytes: 1 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				if _, err := l.Append(ctx, payload(g*1000+i, 200+i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // releaser, like the server after each Iceberg commit
		defer bg.Done()
		for ctx.Err() == nil {
			st := l.Stats()
			if st.LastLSN > 10 {
				if err := l.Release(st.LastLSN - 10); err != nil {
					errs <- fmt.Errorf("Release: %w", err)
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	go func() { // replayer: every pass sees ascending, contiguous, unreleased records
		defer bg.Done()
		for ctx.Err() == nil {
			before := l.Stats().ReleasedLSN
			var prev LSN
			err := l.Replay(func(lsn LSN, rec []byte) error {
				if lsn <= before || (prev != 0 && lsn != prev+1) {
					return fmt.Errorf("replayed LSN %d after %d (released %d)", lsn, prev, before)
				}
				prev = lsn
				return nil
			})
			if err != nil {
				errs <- fmt.Errorf("Replay: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	cancel()
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Appends != 600 || st.LastLSN != 600 || st.SizeBytes > 1<<20 {
		t.Fatalf("stats %+v", st)
	}
	var onDisk int64
	for _, p := range segmentFiles(t, l.opts.Dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		onDisk += fi.Size()
	}
	if onDisk != st.SizeBytes {
		t.Fatalf("SizeBytes %d, files hold %d", st.SizeBytes, onDisk)
	}
}

func TestRecoverInterruptedRelease(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
	l := openLog(t, opts)
	want := appendN(t, l, 0, 40, varSize)
	files := segmentFiles(t, dir)
	saved := map[string][]byte{}
	for _, p := range files[:2] {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		saved[p] = b
	}
	var firstOfThird uint64
	fmt.Sscanf(filepath.Base(files[2]), "%020d", &firstOfThird)
	upTo := LSN(firstOfThird) // releases segments 1 and 2 entirely
	if err := l.Release(upTo); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash after the marker rename but before the unlinks.
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, markerTmp), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want[upTo:])
	if got := segmentFiles(t, dir); !slices.Equal(got, files[2:]) {
		t.Fatalf("segments after recovery %v, want %v", got, files[2:])
	}
	if _, err := os.Stat(filepath.Join(dir, markerTmp)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale marker temp file not removed: %v", err)
	}
}

func TestRecoverEmptyLastSegment(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, MaxBytes: 1 << 20}
	l := openLog(t, opts)
	want := appendN(t, l, 0, 10, varSize)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash right after creating the next segment leaves it empty.
	empty := filepath.Join(dir, segmentName(11))
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want)
	want = append(want, appendN(t, l, 10, 1, varSize)...)
	if want[10].lsn != 11 {
		t.Fatalf("LSN %d, want 11", want[10].lsn)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() == 0 {
		t.Fatalf("record not appended to the empty segment: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want)
}

func TestCorruptMarker(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, NoSync: true})
	appendN(t, l, 0, 3, varSize)
	if err := l.Release(2); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, markerName), 0)
	_, err := Open(Options{Dir: dir, Logger: quietLogger()})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with corrupt marker: %v, want ErrCorrupt", err)
	}
}

func TestWriteFailureStopsUntilRecover(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	want := appendN(t, l, 0, 1, varSize)
	// The writer is idle and the Append above synchronised with it, so it
	// is safe to break its file from here: the next write fails.
	if err := l.active.Close(); err != nil {
		t.Fatal(err)
	}
	_, err1 := l.Append(context.Background(), []byte("a"))
	_, err2 := l.Append(context.Background(), []byte("b"))
	if !errors.Is(err1, ErrFailed) || !errors.Is(err2, ErrFailed) {
		t.Fatalf("errors after failed write: %v, %v; want ErrFailed", err1, err2)
	}
	if errors.Is(err1, ErrFull) || errors.Is(err1, ErrClosed) {
		t.Fatalf("unexpected error kind: %v", err1)
	}
	if st := l.Stats(); st.Err == nil || st.Failures != 1 {
		t.Fatalf("stats after failure: %+v", st)
	}
	_ = l.Close() // reports the already-closed file
	l = openLog(t, Options{Dir: dir})
	checkEntries(t, replayAll(t, l), want)
	if lsn, err := l.Append(context.Background(), []byte("c")); err != nil || lsn != 2 {
		t.Fatalf("append after reopen: %d, %v", lsn, err)
	}
}
