package server_test

import (
	"encoding/binary"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
	"github.com/dot-do/lakehouse-rpc/internal/servertest"
	"github.com/dot-do/lakehouse-rpc/server"
)

// TestChecksumMismatchCounted sends a frame with a stale checksum, as legacy
// children do: it is accepted, and counted.
func TestChecksumMismatchCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Metrics = reg }))
	ts := openStream(t, in.Dial(), "crc", 0)
	good := mustEncode(t, smallBatch("crc", 1, 2))
	stale := mustEncode(t, smallBatch("crc", 2, 2))
	binary.LittleEndian.PutUint32(stale[36:], 0xdeadbeef)
	for _, f := range [][]byte{good, stale} {
		if a := ts.sendRaw(f).GetAck(); a.GetStatus() != lakehousev1.AckStatus_ACK_STATUS_OK {
			t.Fatalf("batch not acked: %v", a)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "lakehouse_batch_checksum_mismatches_total"); err != nil || n != 1 {
		t.Fatalf("metric present %d times: %v", n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "lakehouse_batch_checksum_mismatches_total" && mf.GetMetric()[0].GetCounter().GetValue() != 1 {
			t.Fatalf("mismatches = %v, want 1", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}
