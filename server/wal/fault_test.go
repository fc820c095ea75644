package wal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// faultFS is a fileSystem over real files that injects write, fsync and
// create failures and models what a crash keeps of each file, including the
// "fsyncgate" behaviour of Linux: pages dirtied before a failed fsync are
// marked clean and never reach the disk, and a later fsync succeeds without
// them. Crash rewrites every file it has seen with that durable image, so a
// test can check what an Open after a power loss finds.
type faultFS struct {
	mu sync.Mutex
	// onWrite, when set, decides the fate of a write: it returns how many
	// bytes of p are written and the error to report (nil: all of p).
	onWrite func(path string, off int64, p []byte) (int, error)
	// onSync, when set, returns the error an fsync reports.
	onSync func(path string) error
	// onCreate, when set, returns the error creating a file reports.
	onCreate func(path string) error
	files    map[string]*faultState
	writes   int
	syncs    int
}

// faultState is what the model knows of one file.
type faultState struct {
	disk  []byte     // content that survives a crash
	dirty [][2]int64 // ranges written since the last fsync attempt
}

func newFaultFS() *faultFS { return &faultFS{files: make(map[string]*faultState)} }

func (fs *faultFS) OpenFile(name string, flag int, perm os.FileMode) (segmentFile, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if flag&os.O_CREATE != 0 && fs.onCreate != nil {
		if err := fs.onCreate(name); err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if _, ok := fs.files[name]; !ok || flag&os.O_CREATE != 0 {
		st := &faultState{}
		if flag&os.O_CREATE == 0 {
			// An existing file: what is in it now counts as durable.
			st.disk, _ = os.ReadFile(name)
		}
		fs.files[name] = st
	}
	return &faultFile{fs: fs, f: f, path: name}, nil
}

// set changes the hooks under the lock.
func (fs *faultFS) set(f func(fs *faultFS)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

// crash replaces every file the model knows with its durable image, as a
// power loss would leave it. Files removed meanwhile stay removed.
func (fs *faultFS) crash(t *testing.T) {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for path, st := range fs.files {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.WriteFile(path, st.disk, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type faultFile struct {
	fs   *faultFS
	f    *os.File
	path string
}

func (ff *faultFile) WriteAt(p []byte, off int64) (int, error) {
	fs := ff.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.writes++
	n, ferr := len(p), error(nil)
	if fs.onWrite != nil {
		n, ferr = fs.onWrite(ff.path, off, p)
	}
	if n > 0 {
		if _, err := ff.f.WriteAt(p[:n], off); err != nil {
			return 0, err
		}
		st := fs.files[ff.path]
		st.dirty = append(st.dirty, [2]int64{off, off + int64(n)})
	}
	if ferr != nil {
		return n, &os.PathError{Op: "write", Path: ff.path, Err: ferr}
	}
	return n, nil
}

func (ff *faultFile) Sync() error {
	fs := ff.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.syncs++
	st := fs.files[ff.path]
	if fs.onSync != nil {
		if err := fs.onSync(ff.path); err != nil {
			// fsyncgate: the dirty pages are marked clean and lost.
			st.dirty = nil
			return &os.PathError{Op: "sync", Path: ff.path, Err: err}
		}
	}
	if err := ff.f.Sync(); err != nil {
		return err
	}
	cur, err := os.ReadFile(ff.path)
	if err != nil {
		return err
	}
	disk := make([]byte, len(cur))
	copy(disk, st.disk) // the old durable content, cut or extended (with zeros) to the new size
	for _, r := range st.dirty {
		lo, hi := min(r[0], int64(len(cur))), min(r[1], int64(len(cur)))
		copy(disk[lo:hi], cur[lo:hi])
	}
	st.disk, st.dirty = disk, nil
	return nil
}

func (ff *faultFile) Truncate(size int64) error {
	fs := ff.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return ff.f.Truncate(size)
}

func (ff *faultFile) Close() error { return ff.f.Close() }

// faultOpts returns options with fs installed and small segments.
func faultOpts(dir string, fs *faultFS) Options {
	return Options{Dir: dir, SegmentBytes: 8 << 10, MaxBytes: 8 << 20, Logger: quietLogger(), fs: fs}
}

// mustFail appends rec and checks that the append fails with ErrFailed.
func mustFail(t *testing.T, l *Log, rec []byte) {
	t.Helper()
	if lsn, err := l.Append(context.Background(), rec); !errors.Is(err, ErrFailed) {
		t.Fatalf("append during the fault: LSN %d, %v; want ErrFailed", lsn, err)
	}
}

// reopenAfterCrash simulates a power loss (only durable bytes survive),
// reopens the log and checks that it holds exactly want.
func reopenAfterCrash(t *testing.T, l *Log, fs *faultFS, opts Options, want []entry) *Log {
	t.Helper()
	_ = l.Close()
	fs.crash(t)
	opts.fs = nil
	l = openLog(t, opts)
	checkEntries(t, replayAll(t, l), want)
	return l
}

var (
	errIO     = syscall.EIO
	errNoSpac = syscall.ENOSPC
)

// TestRecoverAfterWriteError: a write fails; the log refuses appends, stays
// stopped while the fault lasts (the probe fails), recovers once it is gone,
// and after a crash holds exactly the acknowledged records.
func TestRecoverAfterWriteError(t *testing.T) {
	dir, fs := t.TempDir(), newFaultFS()
	opts := faultOpts(dir, fs)
	l := openLog(t, opts)
	want := appendN(t, l, 0, 20, varSize)

	fs.set(func(fs *faultFS) {
		fs.onWrite = func(string, int64, []byte) (int, error) { return 0, errIO }
	})
	mustFail(t, l, payload(100, 300))
	mustFail(t, l, payload(101, 300)) // refused: the log is stopped
	if err := l.Recover(); err == nil {
		t.Fatal("Recover succeeded while writes still fail")
	}
	st := l.Stats()
	if st.Err == nil || st.Failures != 1 || st.Recoveries != 0 || st.LastError == "" || st.FailedAt.IsZero() {
		t.Fatalf("stats while failed: %+v", st)
	}
	fs.set(func(fs *faultFS) { fs.onWrite = nil })
	if err := l.Recover(); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	st = l.Stats()
	if st.Err != nil || st.Failures != 1 || st.Recoveries != 1 || st.LastLSN != want[len(want)-1].lsn {
		t.Fatalf("stats after recovery: %+v", st)
	}
	if err := l.Recover(); err != nil { // healthy: no-op
		t.Fatalf("Recover on a healthy log: %v", err)
	}
	more := appendN(t, l, 200, 10, varSize)
	if more[0].lsn != want[len(want)-1].lsn+1 {
		t.Fatalf("first LSN after recovery %d, want %d", more[0].lsn, want[len(want)-1].lsn+1)
	}
	want = append(want, more...)
	checkEntries(t, replayAll(t, l), want)
	l = reopenAfterCrash(t, l, fs, opts, want)
	appendN(t, l, 300, 3, varSize)
}

// TestRecoverAfterFsyncError is the fsyncgate case: an fsync fails and the
// kernel forgets the dirty pages, so a later fsync of the same file would
// succeed without them. Records written before the failed fsync must never
// be acknowledged, and nothing acknowledged later may depend on them: after
// a crash the log must open cleanly with exactly the acked records.
func TestRecoverAfterFsyncError(t *testing.T) {
	for _, size := range []int{300, 100 << 10} { // coalesced and direct writes
		dir, fs := t.TempDir(), newFaultFS()
		opts := faultOpts(dir, fs)
		opts.SegmentBytes = 1 << 20
		l := openLog(t, opts)
		want := appendN(t, l, 0, 5, func(int) int { return size })

		failed := false
		fs.set(func(fs *faultFS) {
			fs.onSync = func(string) error {
				if !failed {
					failed = true
					return errIO
				}
				return nil
			}
		})
		mustFail(t, l, payload(100, size))
		mustFail(t, l, payload(101, size))
		if err := l.Recover(); err != nil {
			t.Fatalf("Recover: %v", err)
		}
		more := appendN(t, l, 200, 5, func(int) int { return size })
		want = append(want, more...)
		checkEntries(t, replayAll(t, l), want)
		l = reopenAfterCrash(t, l, fs, opts, want)
		_ = l.Close()
	}
}

// TestRecoverENOSPCMidRecord: the disk fills in the middle of a record
// (a short write, then ENOSPC). The torn record is cut off, the log refuses
// appends while the disk stays full, and recovers once space is freed.
func TestRecoverENOSPCMidRecord(t *testing.T) {
	for _, size := range []int{300, 100 << 10} {
		dir, fs := t.TempDir(), newFaultFS()
		opts := faultOpts(dir, fs)
		opts.SegmentBytes = 1 << 20
		l := openLog(t, opts)
		want := appendN(t, l, 0, 7, func(int) int { return size })
		segBefore := segmentFiles(t, dir)

		full := true
		fs.set(func(fs *faultFS) {
			fs.onWrite = func(_ string, _ int64, p []byte) (int, error) {
				if full {
					return len(p) / 2, errNoSpac // half of it fits
				}
				return len(p), nil
			}
		})
		mustFail(t, l, payload(100, size))
		for range 3 { // the disk is still full: the probe fails
			if err := l.Recover(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Recover on a full disk: %v, want ENOSPC", err)
			}
			mustFail(t, l, payload(101, size))
		}
		if st := l.Stats(); st.Failures != 1 || st.Err == nil {
			t.Fatalf("stats: %+v", st)
		}
		fs.set(func(*faultFS) { full = false })
		if err := l.Recover(); err != nil {
			t.Fatalf("Recover after space was freed: %v", err)
		}
		// The torn half record is gone from the old segment.
		fi, err := os.Stat(segBefore[len(segBefore)-1])
		if err != nil || fi.Size() != int64(7*(headerSize+size)) {
			t.Fatalf("old segment after recovery: %v, %v; want %d bytes", fi.Size(), err, 7*(headerSize+size))
		}
		more := appendN(t, l, 200, 4, func(int) int { return size })
		want = append(want, more...)
		l = reopenAfterCrash(t, l, fs, opts, want)
		more = appendN(t, l, 300, 2, func(int) int { return size })
		want = append(want, more...)
		_ = l.Close()
		l = openLog(t, Options{Dir: dir, Logger: quietLogger()})
		checkEntries(t, replayAll(t, l), want)
		_ = l.Close()
	}
}

// TestRecoverAfterFailedGroupCommitAcrossRoll: a group commit rolls to a
// new segment (fsyncing its first records into the old one) and then fails
// in the new one. None of its records was acknowledged, so Recover removes
// them all, also those already durable in the old segment; otherwise a
// restart would replay records whose senders were told to resend them.
func TestRecoverAfterFailedGroupCommitAcrossRoll(t *testing.T) {
	dir, fs := t.TempDir(), newFaultFS()
	opts := faultOpts(dir, fs)
	opts.SegmentBytes = 4 << 10
	l := openLog(t, opts)
	want := appendN(t, l, 0, 3, func(int) int { return 500 })

	// Hold the writer inside the next write so that the appends after it
	// pile up into one group commit.
	hold, holding := make(chan struct{}), make(chan struct{})
	first := segmentFiles(t, dir)[0]
	var once sync.Once
	fs.set(func(fs *faultFS) {
		fs.onWrite = func(path string, _ int64, p []byte) (int, error) {
			if path != first {
				return 0, errIO // the new segment fails
			}
			return len(p), nil
		}
		fs.onSync = func(string) error {
			once.Do(func() { close(holding); <-hold })
			return nil
		}
	})
	lsn0, done0 := l.AppendAsync(payload(50, 500))
	<-holding // the writer is fsyncing record 4 (it was alone in its batch)
	var dones []<-chan error
	for i := range 12 { // 12 x 516 bytes: rolls inside the batch
		_, d := l.AppendAsync(payload(60+i, 500))
		dones = append(dones, d)
	}
	close(hold)
	if err := <-done0; err != nil {
		t.Fatalf("append held in fsync: %v", err)
	}
	want = append(want, entry{lsn0, payload(50, 500)})
	for _, d := range dones {
		if err := <-d; !errors.Is(err, ErrFailed) {
			t.Fatalf("append in the failed group commit: %v", err)
		}
	}
	if n := len(segmentFiles(t, dir)); n < 2 {
		t.Fatalf("%d segments: the failed batch did not roll", n)
	}
	fs.set(func(fs *faultFS) { fs.onWrite = nil })
	if err := l.Recover(); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	checkEntries(t, replayAll(t, l), want)
	more := appendN(t, l, 200, 12, func(int) int { return 500 })
	want = append(want, more...)
	// The offsets of the records cut off are gone with them.
	checkRanges(t, l, want)
	l = reopenAfterCrash(t, l, fs, opts, want)
	checkRanges(t, l, want)
	_ = l.Close()
}

// TestRecoverAfterFailedCreate: creating the next segment fails (a full
// directory), and a roll that created its file but failed to make it
// durable leaves a file behind; Recover removes it and starts afresh.
func TestRecoverAfterFailedCreate(t *testing.T) {
	dir, fs := t.TempDir(), newFaultFS()
	opts := faultOpts(dir, fs)
	opts.SegmentBytes = 4 << 10
	l := openLog(t, opts)
	want := appendN(t, l, 0, 7, func(int) int { return 500 })
	fs.set(func(fs *faultFS) { fs.onCreate = func(string) error { return errNoSpac } })
	var err error
	for i := 0; err == nil; i++ { // until a roll is needed
		var lsn LSN
		lsn, err = l.Append(context.Background(), payload(100+i, 500))
		if err == nil {
			want = append(want, entry{lsn, payload(100+i, 500)})
		}
	}
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append needing a new segment: %v", err)
	}
	if err := l.Recover(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Recover while creates fail: %v", err)
	}
	// A stray empty segment file where the next one goes (a roll that
	// created it and then failed).
	stray := filepath.Join(dir, segmentName(want[len(want)-1].lsn+1))
	if err := os.WriteFile(stray, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs.set(func(fs *faultFS) { fs.onCreate = nil })
	if err := l.Recover(); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	more := appendN(t, l, 200, 10, func(int) int { return 500 })
	want = append(want, more...)
	l = reopenAfterCrash(t, l, fs, opts, want)
	_ = l.Close()
}

// TestReleaseAndCloseWhileFailed: the committed part of the log can still
// be released while the log is stopped (the flusher keeps working), and
// Close works in that state.
func TestReleaseAndCloseWhileFailed(t *testing.T) {
	dir, fs := t.TempDir(), newFaultFS()
	opts := faultOpts(dir, fs)
	opts.SegmentBytes = 2 << 10
	l := openLog(t, opts)
	want := appendN(t, l, 0, 20, func(int) int { return 400 })
	fs.set(func(fs *faultFS) {
		fs.onWrite = func(string, int64, []byte) (int, error) { return 0, errIO }
	})
	mustFail(t, l, payload(100, 400))
	if err := l.Release(want[9].lsn); err != nil {
		t.Fatalf("Release while failed: %v", err)
	}
	checkEntries(t, replayAll(t, l), want[10:])
	fs.set(func(fs *faultFS) { fs.onWrite = nil })
	if err := l.Recover(); err != nil {
		t.Fatal(err)
	}
	more := appendN(t, l, 200, 5, func(int) int { return 400 })
	if err := l.Release(want[14].lsn); err != nil {
		t.Fatal(err)
	}
	want = append(want[15:], more...)
	checkEntries(t, replayAll(t, l), want)

	fs.set(func(fs *faultFS) {
		fs.onWrite = func(string, int64, []byte) (int, error) { return 0, errIO }
	})
	mustFail(t, l, payload(300, 400))
	if err := l.Close(); err != nil {
		t.Fatalf("Close while failed: %v", err)
	}
	if err := l.Recover(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recover after Close: %v", err)
	}
	l = openLog(t, Options{Dir: dir, Logger: quietLogger()})
	checkEntries(t, replayAll(t, l), want)
}

// TestRecoverFailsAppendsQueuedBeforeTheFailure: appends queued behind a
// failing write carry LSNs that Recover hands out again, so they must fail
// whether the writer or Recover gets to them first. Repeated, because which
// one does is a race.
func TestRecoverFailsAppendsQueuedBeforeTheFailure(t *testing.T) {
	for i := range 10 {
		dir, fs := t.TempDir(), newFaultFS()
		opts := faultOpts(dir, fs)
		// In odd rounds the writer waits after the failed commit until
		// Recover has run, so Recover finds the queued appends; in even
		// rounds the writer fails them first.
		recovered := make(chan struct{})
		var once sync.Once
		if i%2 == 1 {
			opts.afterCommit = func(err error) {
				if err != nil {
					once.Do(func() { <-recovered })
				}
			}
		}
		l := openLog(t, opts)
		want := appendN(t, l, 0, 3, varSize)
		hold, holding := make(chan struct{}), make(chan struct{})
		fs.set(func(fs *faultFS) {
			fs.onWrite = func(string, int64, []byte) (int, error) {
				close(holding)
				<-hold
				return 0, errIO
			}
		})
		_, d0 := l.AppendAsync(payload(100, 300))
		<-holding
		var queued []<-chan error
		for j := range 3 {
			_, d := l.AppendAsync(payload(101+j, 300))
			queued = append(queued, d)
		}
		// fs.mu is held by the blocked write: clear the hook once it returns.
		close(hold)
		if err := <-d0; !errors.Is(err, ErrFailed) {
			t.Fatalf("round %d: failing append: %v", i, err)
		}
		fs.set(func(fs *faultFS) { fs.onWrite = nil })
		if err := l.Recover(); err != nil {
			t.Fatalf("round %d: Recover: %v", i, err)
		}
		close(recovered)
		for _, d := range queued {
			if err := <-d; !errors.Is(err, ErrFailed) {
				t.Fatalf("round %d: append queued before the failure: %v, want ErrFailed", i, err)
			}
		}
		more := appendN(t, l, 200, 2, varSize)
		if more[0].lsn != want[len(want)-1].lsn+1 {
			t.Fatalf("round %d: LSN after recovery %d", i, more[0].lsn)
		}
		want = append(want, more...)
		l = reopenAfterCrash(t, l, fs, opts, want)
		_ = l.Close()
	}
}
