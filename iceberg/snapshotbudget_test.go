package iceberg

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestSnapshotsToKeep: the newest snapshots that fit in MaxSnapshotBytes, at
// most MaxSnapshots, at least MinSnapshots, whatever the order they come in.
func TestSnapshotsToKeep(t *testing.T) {
	var snaps []table.Snapshot
	for i := range 10 { // each about 1,000 bytes; the newest first, then the rest
		ts := int64(1000 * ((i + 5) % 10))
		snaps = append(snaps, table.Snapshot{SnapshotID: int64(i), TimestampMs: ts,
			Summary: &table.Summary{Properties: iceberg.Properties{"w": strings.Repeat("x", 792)}}})
	}
	for _, tc := range []struct {
		name          string
		min, max      int
		bytes         int64
		keep          int
		oldestKeptMs  int64
		noCapExpected bool
	}{
		{"bytes bind", 1, 200, 4500, 4, 6000, false},
		{"count binds", 1, 3, 1 << 20, 3, 7000, false},
		{"min wins over bytes", 6, 200, 4500, 6, 4000, false},
		{"neither binds", 1, 200, 1 << 20, 10, 0, true},
		{"not even one fits", 1, 200, 10, 1, 9000, false},
	} {
		cfg := MaintenanceConfig{MinSnapshots: tc.min, MaxSnapshots: tc.max, MaxSnapshotBytes: tc.bytes}
		keep, oldest := snapshotsToKeep(snaps, cfg)
		if keep != tc.keep || (tc.noCapExpected != oldest.IsZero()) || (!oldest.IsZero() && oldest.UnixMilli() != tc.oldestKeptMs) {
			t.Errorf("%s: keep %d, oldest kept %v; want %d, %d ms", tc.name, keep, oldest, tc.keep, tc.oldestKeptMs)
		}
	}
}

// TestSnapshotBytesCap: with many sources per commit, expiry keeps only the
// newest snapshots whose summaries (which hold the commit's watermarks) fit
// in MaxSnapshotBytes, however young; every row and watermark stays.
func TestSnapshotBytesCap(t *testing.T) {
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.MinSnapshots = 2
		c.Maintenance.MaxSnapshotBytes = 20 << 10 // 100 sources: about 5 KB a snapshot
		c.Maintenance.CompactDisabled = true
		c.Mirror = false
	})
	var fs []*sink.Flush
	for i := 1; i <= 8; i++ {
		f := manySourcesFlush(uint64(i), 100)
		mustCommit(t, s, f)
		fs = append(fs, f)
		time.Sleep(1100 * time.Millisecond / 4) // distinct timestamps
	}
	time.Sleep(1100 * time.Millisecond)
	tbl, err := s.LoadTable(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(tbl.CurrentSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	if n := snapshotBytes(*tbl.CurrentSnapshot()); n < int64(len(js))*8/10 || n > int64(len(js))*13/10 {
		t.Fatalf("a snapshot of 100 sources is estimated at %d bytes, its JSON is %d", n, len(js))
	}
	maintain(t, s, MaintainOptions{})
	if h := healthOf(t, s, "users"); h.Snapshots < 2 || h.Snapshots > 4 {
		t.Errorf("users keeps %d snapshots, want 2..4 (20 KiB of snapshots, retention 1 h, at most 200)", h.Snapshots)
	}
	diffKeys(t, flushKeys(fs...), scanKeys(t, s))
	tbl, err = s.LoadTable(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	wm, err := watermarksFromProps(tbl.Properties())
	if err != nil {
		t.Fatal(err)
	}
	if len(wm) != 100 || wm["shard-0042"].BatchSeq != 8 {
		t.Errorf("after expiry: %d sources' watermarks, shard-0042 at %+v; want 100, batch 8", len(wm), wm["shard-0042"])
	}
}

func TestMaxSnapshotBytesValidated(t *testing.T) {
	m, err := MaintenanceConfig{}.withDefaults()
	if err != nil || m.MaxSnapshotBytes != DefaultMaxSnapshotBytes {
		t.Fatalf("defaults: %d bytes, err %v; want %d", m.MaxSnapshotBytes, err, DefaultMaxSnapshotBytes)
	}
	if _, err := (MaintenanceConfig{MaxSnapshotBytes: -1}).withDefaults(); err == nil || !strings.Contains(err.Error(), "snapshot bytes") {
		t.Errorf("MaxSnapshotBytes -1: error %v, want one naming the snapshot bytes", err)
	}
}
