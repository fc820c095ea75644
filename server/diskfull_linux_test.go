//go:build linux

package server_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/internal/testing/tmpfs"
	"github.com/dot-do/lakehouse-rpc/server"
)

// smallDisk mounts a tmpfs of the given size and unmounts it when the test
// ends (after the server, whose cleanup is registered later), or skips.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir, err := tmpfs.Mount(t, size)
	if err != nil {
		t.Skipf("skipping: cannot mount a tmpfs to fill (%v): needs root or CAP_SYS_ADMIN; "+
			"server/wal's fault-injection tests cover the log's recovery without it", err)
	}
	return dir
}

// fill fills the filesystem of dir; the returned func frees it.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	path, _ := tmpfs.Fill(t, dir)
	return func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

func waitWAL(t *testing.T, in *servertest.Instance, want lakehousev1.WALState) *lakehousev1.ServerStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := in.Server.Status()
		if st.GetWal().GetState() == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("write-ahead log state %v, want %v", st.GetWal(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantRetryNack(t *testing.T, r *lakehousev1.StreamResponse, seq uint64) {
	t.Helper()
	n := r.GetNack()
	if n == nil || n.Reason != lakehousev1.NackReason_NACK_REASON_BUFFER_FULL || !n.ShouldRetry || n.RetryDelayMs == 0 || n.SequenceNumber != seq {
		t.Fatalf("batch %d on a full disk: got %v, want a buffer_full nack with a retry delay", seq, r)
	}
}

// TestWALFullDiskRecoversWithoutRestart fills the filesystem under the
// write-ahead log: batches are nacked buffer_full with a retry delay, the
// status and metrics show the failure; once the disk is freed the log
// recovers in the same process, and the batches refused meanwhile are
// accepted when resent (not acked as duplicates of what was never stored:
// batch numbers, entry sequences and the legacy dedup window are rolled
// back), each stored once.
func TestWALFullDiskRecoversWithoutRestart(t *testing.T) {
	mnt := smallDisk(t, "4m")
	reg := prometheus.NewRegistry()
	in := servertest.StartIn(t, filepath.Join(mnt, "data"), servertest.WithSync(), servertest.WithConfig(func(c *server.Config) {
		c.Metrics = reg
		c.WALRecoveryDelay = 20 * time.Millisecond
		c.WALRecoveryMaxDelay = 100 * time.Millisecond
	}))
	cc := in.Dial()
	native := openStream(t, cc, "native", 0)
	legacy := openStream(t, cc, "legacy", lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY)
	const n = 20
	for _, ts := range []*testStream{native, legacy} {
		if a := ts.sendFrame(smallBatch(ts.conn.SourceId, 1, n)).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
			t.Fatalf("batch 1: %v", a)
		}
	}

	// Episode 1: a legacy (entry mode) batch is the append that fails;
	// then it is resent under a new number, as legacy children do.
	free := fill(t, mnt)
	wantRetryNack(t, legacy.sendFrame(smallBatch("legacy", 2, n)), 2)
	lb := smallBatch("legacy", 2, n)
	lb.Sequence, lb.Retry = 3, true
	wantRetryNack(t, legacy.sendFrame(lb), 3)

	st := waitWAL(t, in, lakehousev1.WALState_WAL_STATE_FAILED)
	if st.State != lakehousev1.ParentState_PARENT_STATE_RECOVERING || st.Wal.Failures != 1 || st.Wal.LastError == "" || st.Wal.FailedSinceMs == 0 {
		t.Fatalf("status while the disk is full: %v %v", st.State, st.Wal)
	}
	if v := gauge(t, reg, "lakehouse_wal_failed"); v != 1 {
		t.Fatalf("lakehouse_wal_failed = %v while failed", v)
	}
	time.Sleep(300 * time.Millisecond) // a few failing probes
	if st := in.Server.Status(); st.Wal.State != lakehousev1.WALState_WAL_STATE_FAILED || st.Wal.RecoveryAttempts == 0 {
		t.Fatalf("status with the disk still full: %v", st.Wal)
	}
	// Batches acked before the fault are still committed meanwhile (the
	// sink is on another disk).
	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || !res.Success {
		t.Fatalf("flush while the log is failed: %v %v", res, err)
	}
	free()
	st = waitWAL(t, in, lakehousev1.WALState_WAL_STATE_OK)
	if st.Wal.Recoveries != 1 || st.Wal.Failures != 1 || st.State == lakehousev1.ParentState_PARENT_STATE_RECOVERING {
		t.Fatalf("status after recovery: %v %v", st.State, st.Wal)
	}
	// Resent, the refused entries are accepted: not duplicates.
	lb.Sequence = 4
	if a := legacy.sendFrame(lb).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK || a.Details.EntriesAccepted != n {
		t.Fatalf("legacy batch resent after recovery: %v", a)
	}

	// Episode 2: a native batch is the append that fails, with the next
	// one pipelined behind it.
	free = fill(t, mnt)
	for _, seq := range []uint64{2, 3} {
		f := mustEncode(t, smallBatch("native", seq, n))
		if err := native.st.Send(&lakehousev1.StreamRequest{Kind: &lakehousev1.StreamRequest_BinaryBatch{BinaryBatch: f}}); err != nil {
			t.Fatal(err)
		}
	}
	wantRetryNack(t, native.recv(), 2)
	if r := native.recv(); r.GetNack() == nil || r.GetNack().Reason == lakehousev1.NackReason_NACK_REASON_INTERNAL_ERROR {
		t.Fatalf("pipelined batch 3: %v", r)
	}
	waitWAL(t, in, lakehousev1.WALState_WAL_STATE_FAILED)
	free()
	waitWAL(t, in, lakehousev1.WALState_WAL_STATE_OK)
	// Resent under the same numbers, they are accepted: not duplicates, and
	// their entry sequences are not refused as already seen.
	for seq := uint64(2); seq <= 3; seq++ {
		a := native.sendFrame(smallBatch("native", seq, n)).GetAck()
		if a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK || a.Details.EntriesAccepted != n {
			t.Fatalf("native batch %d resent after recovery: %v", seq, a)
		}
	}

	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || !res.Success {
		t.Fatalf("flush after recovery: %v %v", res, err)
	}
	for name, want := range map[string]float64{"lakehouse_wal_failures_total": 2, "lakehouse_wal_recoveries_total": 2, "lakehouse_wal_failed": 0} {
		if v := gauge(t, reg, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	assertExactlyOnce(t, in, map[string]int{"native": 3 * n, "legacy": 2 * n})
}
