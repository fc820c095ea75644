package iceberg

import (
	"math"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// The background mirror compaction checks a table after each mirror commit
// that added delete files, and a check loads the mirror, reads its delete
// manifests and plans a scan, under the table's commit lock. A partition
// gains about one delete file per commit, so with W1 at a commit a second
// a partition was due after 16 commits, and 15 checks in 16 found nothing:
// 3.6 of a server's 76 CPU-s a minute (the mirror loads 2.0 s, the scan
// plans 1.6 s) against 0.9 s of rewriting.
//
// So a check that finds nothing due leaves the table's headroom: the most
// delete files, data files and scan cost of any of its partitions. Each
// mirror commit of this sink made on the snapshot the headroom describes
// (or on the commits counted since) reports what it added to any one
// partition at most; the table is checked again once that could have made
// a partition due. Anything else (a commit of another writer or of
// maintenance, a partition spec change) shows as a commit whose parent is
// not the snapshot the headroom knows, and the table is checked then.

// mirrorGrowth is what one mirror commit added, in the partition that got
// the most of each.
type mirrorGrowth struct {
	snapshot, parent int64 // the commit's snapshot and its parent (0: unknown)
	specID           int   // the table's default partition spec after it (a change: measure again)
	deleteFiles      int   // delete files added to one partition, at most
	deleteRows       int64 // delete rows added to one partition, at most
	dataFiles        int   // data files added to one partition, at most
}

// growthOf measures the files a mirror commit added, committed as snap.
func growthOf(meta table.Metadata, snap *table.Snapshot, dataFiles, deleteFiles []iceberg.DataFile) mirrorGrowth {
	g := mirrorGrowth{snapshot: snap.SnapshotID, specID: meta.DefaultPartitionSpec()}
	if snap.ParentSnapshotID != nil {
		g.parent = *snap.ParentSnapshotID
	}
	type perPart struct {
		dels, data int
		rows       int64
	}
	parts := make(map[string]*perPart)
	get := func(df iceberg.DataFile) *perPart {
		k := partitionKey(meta, df)
		p := parts[k]
		if p == nil {
			p = &perPart{}
			parts[k] = p
		}
		return p
	}
	for _, df := range dataFiles {
		get(df).data++
	}
	for _, df := range deleteFiles {
		p := get(df)
		p.dels++
		p.rows += df.Count()
	}
	for _, p := range parts {
		g.deleteFiles = max(g.deleteFiles, p.dels)
		g.deleteRows = max(g.deleteRows, p.rows)
		g.dataFiles = max(g.dataFiles, p.data)
	}
	return g
}

// mirrorHeadroom is what a check that found nothing due measured of a
// table, plus what this sink's commits added since.
type mirrorHeadroom struct {
	snapshot    int64 // the snapshot measured, then that of the last commit counted
	specID      int
	deleteFiles int   // the most delete files of a partition
	dataFiles   int   // the most data files of a partition
	scanCost    int64 // the highest scan cost of a partition
	// Added since, in the partition that got the most of each, summed
	// over the commits.
	addedDeleteFiles int
	addedDeleteRows  int64
	addedDataFiles   int
}

// measureHeadroom is the headroom of a mirror whose partitions (measured
// at snapshot) have nothing due. ok is false where a later commit cannot
// be bounded by its own files: the table has several partition specs (an
// unpartitioned spec's equality deletes apply to every partition).
func measureHeadroom(meta table.Metadata, snapshot int64, parts map[string]*mirrorPartition) (h mirrorHeadroom, ok bool) {
	if len(meta.PartitionSpecs()) != 1 {
		return h, false
	}
	h = mirrorHeadroom{snapshot: snapshot, specID: meta.DefaultPartitionSpec()}
	for _, p := range parts {
		h.deleteFiles = max(h.deleteFiles, p.deleteFiles)
		h.dataFiles = max(h.dataFiles, p.dataFiles)
		h.scanCost = max(h.scanCost, p.scanCost)
	}
	return h, true
}

// add counts a commit made on the headroom's snapshot. It reports false
// when the commit was made on another one (or the headroom is unknown):
// the table must be measured again.
func (h *mirrorHeadroom) add(g mirrorGrowth) bool {
	if h == nil || g.parent == 0 || g.parent != h.snapshot || g.specID != h.specID {
		return false
	}
	h.snapshot = g.snapshot
	h.addedDeleteFiles += g.deleteFiles
	h.addedDeleteRows += g.deleteRows
	h.addedDataFiles += g.dataFiles
	return true
}

// mayBeDue reports whether a partition may have become due, by the same
// rules as mirrorPartitionDue (minDeletes delete files, or a scan cost
// over scanBudget; 0: none). A delete file of a commit applies to the data
// files of its partition committed before it, so a partition's scan cost
// grew by at most its added delete rows times its data files.
func (h *mirrorHeadroom) mayBeDue(minDeletes int, scanBudget int64) bool {
	if h.deleteFiles+h.addedDeleteFiles >= minDeletes {
		return true
	}
	if scanBudget <= 0 {
		return false
	}
	files := int64(h.dataFiles) + int64(h.addedDataFiles)
	grown := int64(math.MaxInt64)
	if files == 0 || h.addedDeleteRows <= math.MaxInt64/files {
		grown = h.addedDeleteRows * files
	}
	return grown > scanBudget-h.scanCost
}
