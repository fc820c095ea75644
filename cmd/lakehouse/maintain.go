package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// maintFlags are the table maintenance flags, shared by serve (which runs
// maintenance in the background) and maintain (one pass, for cron or after
// changing settings).
type maintFlags struct {
	cfg iceberg.MaintenanceConfig
	off bool
}

func (m *maintFlags) register(fs *flag.FlagSet) {
	c := &m.cfg
	fs.DurationVar(&c.Interval, "maintenance-interval", iceberg.DefaultMaintenanceInterval, "how often each table is checked for snapshot expiry and compaction")
	fs.DurationVar(&c.SnapshotRetention, "snapshot-retention", iceberg.DefaultSnapshotRetention, "expire snapshots older than this (time travel reaches this far back)")
	fs.IntVar(&c.MinSnapshots, "min-snapshots", iceberg.DefaultMinSnapshots, "keep at least this many of a table's newest snapshots, whatever their age")
	fs.IntVar(&c.MaxSnapshots, "max-snapshots", iceberg.DefaultMaxSnapshots, "keep at most this many of a table's newest snapshots, however young (bounds metadata at short commit intervals)")
	fs.Int64Var(&c.MaxSnapshotBytes, "max-snapshot-bytes", iceberg.DefaultMaxSnapshotBytes, "keep at most the newest snapshots of a table that fit in this many bytes of its metadata, however young: each snapshot's summary holds the watermarks of its commit's sources, so with hundreds of sources per commit this binds before --max-snapshots (at least --min-snapshots are kept)")
	fs.IntVar(&c.MetadataVersions, "metadata-versions", iceberg.DefaultMetadataVersions, "previous metadata files a table keeps; older ones are deleted after each commit")
	fs.IntVar(&c.ManifestMergeCount, "manifest-merge-count", iceberg.DefaultManifestMergeCount, "a commit merges a table's manifests once it has this many")
	fs.BoolVar(&c.CompactDisabled, "no-compaction", false, "do not compact small data files")
	fs.IntVar(&c.CompactMinFiles, "compact-min-files", iceberg.DefaultCompactMinFiles, "compact a partition once it has this many files of one size tier (tiers grow by this factor: a row is rewritten about log_N(target size / staged file size) times)")
	fs.Int64Var(&c.CompactSmallFileBytes, "compact-small-file-bytes", iceberg.DefaultCompactSmallFileBytes, "data files below this size are small: one size tier, merged together whatever their sizes")
	fs.BoolVar(&c.OrphanDisabled, "no-orphan-cleanup", false, "do not remove unreferenced files")
	fs.DurationVar(&c.OrphanAge, "orphan-age", iceberg.DefaultOrphanAge, "remove unreferenced files once they are this old (at least 1s; keep it well above the longest commit, outages included)")
	fs.DurationVar(&c.OrphanInterval, "orphan-interval", iceberg.DefaultOrphanInterval, "how often orphan cleanup lists each table's files")
	fs.DurationVar(&c.Timeout, "maintenance-timeout", iceberg.DefaultMaintenanceTimeout, "bound on each maintenance job of a table (expiry, compaction, orphan cleanup); a stalled store fails the job and releases the commit lock")
}

func runMaintain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		mf      maintFlags
		asJSON  bool
		orphans bool
	)
	s, _, err := openForRead(ctx, "maintain", args, stdout, stderr, func(fs *flag.FlagSet) {
		mf.register(fs)
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.BoolVar(&orphans, "orphans", true, "include orphan cleanup in this pass")
	}, &mf)
	if err != nil {
		return err
	}
	defer s.Close()
	start := time.Now()
	merr := s.Maintain(ctx, iceberg.MaintainOptions{Orphans: orphans, MirrorDeletes: true})
	health := s.Health()
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(health); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tSNAPSHOTS\tDATA FILES\tMANIFESTS\tMETADATA BYTES\tEXPIRED\tCOMPACTED\tWRITTEN\tORPHANS\tERROR")
		for _, h := range health {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", h.Name, h.Snapshots, h.DataFiles, h.Manifests,
				h.MetadataBytes, h.ExpiredSnapshots, h.FilesCompacted, h.FilesWritten, h.OrphansRemoved, h.LastError)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "maintained %d tables in %s\n", len(health), time.Since(start).Round(time.Millisecond))
		if n := s.MaintenanceTotals().SkippedElsewhere; n > 0 {
			fmt.Fprintf(stdout, "skipped %d tables that a serving instance is maintaining now (run again later)\n", n)
		}
	}
	return merr
}
