package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
)

// gauge returns the value of the unlabelled metric name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestBeyondMemoryBatchesStayInTheLog: batches beyond the memory buffer are
// acknowledged (not refused buffer_full) and held only in the write-ahead
// log; a restart with such a backlog keeps memory within the cap; a flush
// reads them back, in chunks of one flush's size, and commits each exactly
// once.
func TestBeyondMemoryBatchesStayInTheLog(t *testing.T) {
	const maxMem = 4000
	var reg *prometheus.Registry
	flushBytes := int64(1 << 30)
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.MaxBufferBytes = maxMem
		c.FlushInterval = time.Hour
		c.PressureThreshold = 10 // no automatic flush: the backlog stays
		c.FlushEntries = 1 << 20
		c.FlushBytes = flushBytes
		reg = prometheus.NewRegistry() // a new one for every (re)start
		c.Metrics = reg
	}))
	ts := openStream(t, in.Dial(), "spill", 0)
	const n = 30
	for seq := uint64(1); seq <= n; seq++ {
		a := ts.sendFrame(smallBatch("spill", seq, 3)).GetAck()
		if a == nil || (a.Status != lakehousev1.AckStatus_ACK_STATUS_OK && a.Status != lakehousev1.AckStatus_ACK_STATUS_BUFFERED) {
			t.Fatalf("batch %d: %v, want an ok or buffered ack", seq, a)
		}
	}
	st := in.Server.Status()
	if got := st.GetBuffer().GetTotalSizeBytes(); got < 3*maxMem {
		t.Fatalf("buffer holds %d bytes, want the whole backlog (> %d)", got, 3*maxMem)
	}
	if mem := gauge(t, reg, "lakehouse_buffer_bytes"); mem > maxMem {
		t.Errorf("%v bytes in memory, cap %d", mem, maxMem)
	}
	if logOnly := gauge(t, reg, "lakehouse_buffer_log_only_bytes"); logOnly < 2*maxMem {
		t.Errorf("%v bytes held only in the log, want most of the backlog", logOnly)
	}

	// A crash with the backlog: the restart replays it within the cap too,
	// and commits it in chunks of at most FlushBytes.
	in.Crash()
	flushBytes = 2000
	in.Restart()
	if mem := gauge(t, reg, "lakehouse_buffer_bytes"); mem > maxMem+2000 {
		t.Errorf("after the restart %v bytes in memory, cap %d + one flush", mem, maxMem)
	}
	res, err := in.Server.FlushNow(context.Background(), 0)
	if err != nil || !res.Success {
		t.Fatal(res, err)
	}
	if rb := gauge(t, reg, "lakehouse_wal_read_back_bytes_total"); rb == 0 {
		t.Error("nothing read back from the log")
	}
	if st := in.Server.Status(); st.GetBuffer().GetBatchCount() != 0 {
		t.Errorf("after the flush the buffer holds %v", st.GetBuffer())
	}
	if c := len(in.Server.RecentCommits()); c < 3 {
		t.Errorf("%d commits: a flush of %d bytes should be committed in chunks of 2000", c, 3*maxMem)
	}
	assertExactlyOnce(t, in, map[string]int{"spill": n * 3})
}

// pump sends batches 1..n of source (per entries each) on ts, one at a time
// and at most one per pace, and fails on anything but an ack; it records
// persisted watermarks.
// pumpAll opens a stream per source (prefix-0, prefix-1, ...) and pumps n
// batches of per entries through them all at once (pace between batches),
// failing the test on an error. It returns the streams and each source's
// last persisted batch, for awaitPersisted.
func pumpAll(t *testing.T, in *servertest.Instance, prefix string, sources, n, per int, pace time.Duration) ([]*testStream, []uint64) {
	t.Helper()
	streams := make([]*testStream, sources)
	persisted := make([]uint64, sources)
	errs := make([]error, sources)
	for i := range streams {
		streams[i] = openStream(t, in.Dial(), fmt.Sprintf("%s-%d", prefix, i), 0)
	}
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pump(streams[i], fmt.Sprintf("%s-%d", prefix, i), n, per, pace, &persisted[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return streams, persisted
}

func pump(ts *testStream, source string, n, per int, pace time.Duration, persisted *uint64) error {
	for seq := uint64(1); seq <= uint64(n); seq++ {
		time.Sleep(pace)
		frame, err := codec.EncodeBatch(smallBatch(source, seq, per))
		if err != nil {
			return err
		}
		if err := ts.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: frame}}); err != nil {
			return err
		}
		for {
			r, err := ts.st.Recv()
			if err != nil {
				return err
			}
			if p := r.GetPersisted(); p != nil {
				*persisted = max(*persisted, p.SequenceNumber)
				continue
			}
			if r.GetAck() == nil {
				return fmt.Errorf("%s batch %d: %v, want an ack", source, seq, r)
			}
			break
		}
	}
	return nil
}

// awaitPersisted reads ts until a persisted watermark reaches seq.
func awaitPersisted(ts *testStream, seq uint64, persisted *uint64, within time.Duration) error {
	timer := time.AfterFunc(within, ts.cancel)
	defer timer.Stop()
	for *persisted < seq {
		r, err := ts.st.Recv()
		if err != nil {
			return fmt.Errorf("persisted %d of %d: %w", *persisted, seq, err)
		}
		if p := r.GetPersisted(); p != nil {
			*persisted = max(*persisted, p.SequenceNumber)
		}
	}
	return nil
}

// TestStorageOutageAbsorbedByTheLog: storage (staging and commits) fails
// while four sources send sixteen times the memory buffer. No batch is
// refused; memory stays within the cap plus one flush; once storage is back
// the backlog is read back from the log and committed exactly once, and
// every source gets the persisted watermark of its last batch.
func TestStorageOutageAbsorbedByTheLog(t *testing.T) {
	const (
		maxMem     = 128 << 10
		flushBytes = 32 << 10
		sources    = 4
		batches    = 60
		per        = 40 // about 8.5 KB per batch
	)
	var reg *prometheus.Registry
	in, ss := startStaging(t, func(c *server.Config) {
		c.MaxBufferBytes = maxMem
		c.FlushBytes = flushBytes
		c.FlushInterval = 200 * time.Millisecond
		c.RecoveryInitialDelay = 20 * time.Millisecond
		c.RecoveryMaxDelay = 100 * time.Millisecond
		reg = prometheus.NewRegistry() // a new one for every (re)start
		c.Metrics = reg
	})
	ss.set(func(s *stagingSink) { s.down = true })

	// Sample memory throughout.
	stop := make(chan struct{})
	var maxSeen float64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "lakehouse_buffer_bytes" {
					maxSeen = max(maxSeen, mf.GetMetric()[0].GetGauge().GetValue())
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	streams, persisted := pumpAll(t, in, "outage", sources, batches, per, 0)
	st := in.Server.Status()
	if !st.GetRecovery().GetActive() {
		t.Fatalf("storage down but no recovery: %v", st.GetRecovery())
	}
	if logOnly := gauge(t, reg, "lakehouse_buffer_log_only_bytes"); logOnly < 4*maxMem {
		t.Errorf("%v bytes held only in the log during the outage, want most of the backlog", logOnly)
	}
	if st.GetBuffer().GetTotalSizeBytes() < 8*maxMem {
		t.Errorf("buffer holds %d bytes, want the whole backlog", st.GetBuffer().GetTotalSizeBytes())
	}

	ss.set(func(s *stagingSink) { s.down = false })
	for i, ts := range streams {
		if err := awaitPersisted(ts, batches, &persisted[i], 30*time.Second); err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
	}
	close(stop)
	sampler.Wait()
	t.Logf("memory peak %.0f bytes (cap %d + one flush %d); %.0f bytes read back from the log",
		maxSeen, maxMem, flushBytes, gauge(t, reg, "lakehouse_wal_read_back_bytes_total"))
	if maxSeen > maxMem+flushBytes {
		t.Errorf("memory reached %v bytes, cap %d + one flush %d", maxSeen, maxMem, flushBytes)
	}
	if maxSeen < maxMem/2 {
		t.Errorf("memory peaked at %v bytes: the buffer was never full", maxSeen)
	}
	if rb := gauge(t, reg, "lakehouse_wal_read_back_bytes_total"); rb < 4*maxMem {
		t.Errorf("%v bytes read back from the log", rb)
	}
	if nacks := testutilNacks(t, reg); nacks != 0 {
		t.Errorf("%v batches nacked", nacks)
	}
	want := make(map[string]int)
	for i := range sources {
		want[fmt.Sprintf("outage-%d", i)] = batches * per
	}
	assertExactlyOnce(t, in, want)
}

// testutilNacks counts the nacked batches in lakehouse_batches_total.
func testutilNacks(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "lakehouse_batches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && len(l.GetValue()) > 5 && l.GetValue()[:5] == "nack_" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}
