// Package icebergcheck reads Iceberg tables without iceberg-go's table scan,
// to check what the lakehouse writes: it walks the current snapshot's
// manifest list and manifests (iceberg-go decodes the Avro), reads the data
// and delete files with arrow-go's Parquet reader, and applies equality and
// position deletes by data sequence number and partition as the Iceberg
// spec says. It also scans through iceberg-go (ScanTable) so tests can
// cross-check the two, and compares a mirror table with mirrormodel
// (CompareMirror). Test support, kept as a normal package so integration
// tests can use it.
package icebergcheck

import (
	"context"
	"fmt"

	"github.com/apache/iceberg-go"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// Row is one live row: column name to value. Values are nil, bool, int64
// (int and long), float64 (float and double), string, []byte, time.Time
// (timestamps, in UTC; dates), map[string]any (structs, by field name),
// []any (lists), or the value's text for other types.
type Row map[string]any

// Result is what a read found in a table's current snapshot.
type Result struct {
	Schema     *iceberg.Schema
	SnapshotID int64 // 0 without a snapshot
	Rows       []Row
	// Files read, by content.
	DataFiles, EqualityDeleteFiles, PositionDeleteFiles int
	// MaxPartitionDeleteFiles is the most delete files one partition has.
	MaxPartitionDeleteFiles int
	// DeletedRows counts the data rows the delete files removed.
	DeletedRows int
}

// KeyColumn returns the name of the table's key column: its identifier
// field (row_id unless a pinned schema names another).
func (r *Result) KeyColumn() string {
	if r.Schema != nil {
		if ids := r.Schema.IdentifierFieldIDs; len(ids) == 1 {
			if f, ok := r.Schema.FindFieldByID(ids[0]); ok {
				return f.Name
			}
		}
	}
	return ColRowID
}

// ReadTable reads the live rows of tbl's current snapshot independently of
// iceberg-go's scan: only the metadata location and the table's FileIO
// are taken from tbl.
func ReadTable(ctx context.Context, tbl *table.Table) (*Result, error) {
	fs, err := tbl.FS(ctx)
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: table FileIO: %w", err)
	}
	return ReadMetadataFile(ctx, fs, tbl.MetadataLocation())
}

// ReadMetadataLocation reads the live rows of the table whose metadata
// JSON is at location, opening the storage with props (iceberg-go's
// FileIO properties; nil for local files).
func ReadMetadataLocation(ctx context.Context, props iceberg.Properties, location string) (*Result, error) {
	fs, err := iceio.LoadFS(ctx, props, location)
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: open storage of %s: %w", location, err)
	}
	return ReadMetadataFile(ctx, fs, location)
}

// ReadMetadataFile reads the live rows of the table whose metadata JSON is
// at location in fs.
func ReadMetadataFile(ctx context.Context, fs iceio.IO, location string) (*Result, error) {
	f, err := fs.Open(location)
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: open metadata: %w", err)
	}
	meta, err := table.ParseMetadata(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: parse metadata %s: %w", location, err)
	}
	res := &Result{Schema: meta.CurrentSchema()}
	snap := meta.CurrentSnapshot()
	if snap == nil {
		return res, nil
	}
	res.SnapshotID = snap.SnapshotID
	files, err := liveFiles(fs, meta, snap)
	if err != nil {
		return nil, err
	}
	if err := files.read(ctx, fs, res); err != nil {
		return nil, err
	}
	return res, nil
}

// fileRef is a live file of the snapshot with what deciding which deletes
// apply to it needs.
type fileRef struct {
	df          iceberg.DataFile
	seq         int64  // data sequence number
	partition   string // spec id and partition values, encoded
	unpartition bool   // the file's spec has no fields (deletes apply globally)
}

type snapshotFiles struct {
	data, eqDeletes, posDeletes []fileRef
}

// liveFiles lists the snapshot's live files from its manifest list and
// manifests (entries with status DELETED are not live).
func liveFiles(fs iceio.IO, meta table.Metadata, snap *table.Snapshot) (*snapshotFiles, error) {
	lf, err := fs.Open(snap.ManifestList)
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: open manifest list: %w", err)
	}
	manifests, err := iceberg.ReadManifestList(lf)
	lf.Close()
	if err != nil {
		return nil, fmt.Errorf("icebergcheck: read manifest list %s: %w", snap.ManifestList, err)
	}
	out := &snapshotFiles{}
	for _, m := range manifests {
		for e, err := range m.Entries(fs, true) {
			if err != nil {
				return nil, fmt.Errorf("icebergcheck: read manifest %s: %w", m.FilePath(), err)
			}
			if e.Status() == iceberg.EntryStatusDELETED {
				continue
			}
			df := e.DataFile()
			spec := meta.PartitionSpecByID(int(df.SpecID()))
			if spec == nil {
				return nil, fmt.Errorf("icebergcheck: %s: unknown partition spec %d", df.FilePath(), df.SpecID())
			}
			ref := fileRef{df: df, seq: e.SequenceNum(), unpartition: spec.IsUnpartitioned(),
				partition: fmt.Sprintf("%d/%s", df.SpecID(), encodeKey(partitionValues(df, spec)))}
			if df.FileFormat() != iceberg.ParquetFile {
				return nil, fmt.Errorf("icebergcheck: %s: format %s, only Parquet is read", df.FilePath(), df.FileFormat())
			}
			switch df.ContentType() {
			case iceberg.EntryContentData:
				out.data = append(out.data, ref)
			case iceberg.EntryContentEqDeletes:
				out.eqDeletes = append(out.eqDeletes, ref)
			case iceberg.EntryContentPosDeletes:
				out.posDeletes = append(out.posDeletes, ref)
			default:
				return nil, fmt.Errorf("icebergcheck: %s: content %v not supported", df.FilePath(), df.ContentType())
			}
		}
	}
	return out, nil
}

// partitionValues returns the file's partition values in the spec's order.
func partitionValues(df iceberg.DataFile, spec *iceberg.PartitionSpec) []any {
	p := df.Partition()
	vals := make([]any, 0, spec.NumFields())
	for _, f := range spec.Fields() {
		vals = append(vals, p[f.FieldID])
	}
	return vals
}
