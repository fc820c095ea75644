package iceberg

import (
	"cmp"
	"slices"
	"time"

	"github.com/apache/iceberg-go/table"
)

// snapshotsToKeep returns how many of the newest snapshots expiry keeps
// whatever their age, and the time of the oldest of them: at most
// MaxSnapshots, and only as many as fit in MaxSnapshotBytes of metadata
// (snapshotBytes), but at least MinSnapshots. keep is len(snaps), with a
// zero time, when neither cap binds.
func snapshotsToKeep(snaps []table.Snapshot, cfg MaintenanceConfig) (keep int, oldest time.Time) {
	newest := slices.Clone(snaps)
	slices.SortFunc(newest, func(a, b table.Snapshot) int { return cmp.Compare(b.TimestampMs, a.TimestampMs) })
	keep = min(len(newest), cfg.MaxSnapshots)
	var bytes int64
	for i := range keep {
		if bytes += snapshotBytes(newest[i]); bytes > cfg.MaxSnapshotBytes {
			keep = i // the newest i fit
			break
		}
	}
	keep = max(keep, min(cfg.MinSnapshots, len(newest)))
	if keep == len(newest) {
		return keep, time.Time{}
	}
	return keep, time.UnixMilli(newest[keep-1].TimestampMs)
}

// snapshotBytes estimates what a snapshot takes of its table's metadata
// file: its summary's keys and values (the sink's hold the watermarks of the
// commit's sources), its manifest list's path, and about 200 bytes of ids,
// times, its snapshot-log entry and JSON punctuation.
func snapshotBytes(sn table.Snapshot) int64 {
	n := int64(200 + len(sn.ManifestList))
	if sn.Summary != nil {
		for k, v := range sn.Summary.Properties {
			n += int64(len(k) + len(v) + 6)
		}
	}
	return n
}
