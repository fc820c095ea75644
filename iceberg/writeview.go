package iceberg

import (
	"fmt"
	"math"
	"net/url"
	"strings"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// A write view is a table as table.WriteRecords should see it to write
// records the sink has already prepared. The write reads only the view's
// schema, spec, sort order, properties and location; the view is never
// committed, and the files it writes are rebuilt (rebuildDataFile) to
// claim what the view hid:
//
//   - No sort order, for records already in the table's order (staged rows
//     are sorted before their record is built; a compaction merges sorted
//     files). iceberg-go v0.7.0 sorts every batch it writes by the table's
//     default sort order: sort indices, then a copy of every column. For
//     sorted input that is only a copy, and it was about 8% of the
//     server's CPU at saturation (3.6 s in staging and 4.3 s in compaction
//     of a 108-s profile).
//   - No partition spec, for records of one partition, written into that
//     partition's directory. iceberg-go computes every row's partition to
//     split a batch (getRecordPartitions, boxing each row's timestamp):
//     7.7% of compaction's CPU and 2.2% of the server's in staging at
//     saturation, to find the one partition the sink already knows.

// mergeView returns the view a merge of inputs writes through, and the
// function that turns each file it writes into the manifest entry to
// commit.
//
// A merge of sorted files is sorted: written as it is (unsorted view), it
// claims the table's order. An input that does not claim the order
// (written by another engine, or before the sink claimed orders) may be
// unsorted: iceberg-go then sorts each batch it writes, and the output
// claims nothing. A merge of one partition's files writes through an
// unpartitioned view (onePartition).
func (s *Sink) mergeView(tbl *table.Table, inputs []iceberg.DataFile) (*table.Table, func(iceberg.DataFile) (iceberg.DataFile, error), error) {
	meta := tbl.Metadata()
	ordered := claimOrder(meta, inputs)
	dir, partition, one := onePartition(meta, inputs)
	view, err := s.writeView(tbl, ordered, dir)
	if err != nil {
		return nil, nil, err
	}
	return view, viewEntry(meta, ordered, one, partition), nil
}

// stageView returns the view a stage of rows whose event times (ms) span
// [minMs, maxMs] writes through, and the function that turns each file it
// writes into the manifest entry to stage. Staged rows are sorted; when
// they all fall in one partition (timePartition), the view is
// unpartitioned too, as for a merge (onePartition).
func (s *Sink) stageView(tbl *table.Table, minMs, maxMs int64) (*table.Table, func(iceberg.DataFile) (iceberg.DataFile, error), error) {
	meta := tbl.Metadata()
	dir, partition, one := timePartition(tbl, minMs, maxMs)
	view, err := s.writeView(tbl, true, dir)
	if err != nil {
		return nil, nil, err
	}
	return view, viewEntry(meta, true, one, partition), nil
}

// viewEntry returns the function that turns a file written through a view
// into its manifest entry: bound back to the table's spec and to partition
// if the view hid them (one), claiming the table's order if sorted.
func viewEntry(meta table.Metadata, sorted, one bool, partition map[int]any) func(iceberg.DataFile) (iceberg.DataFile, error) {
	return func(df iceberg.DataFile) (iceberg.DataFile, error) {
		switch {
		case one:
			var order *int
			if o := meta.DefaultSortOrder(); sorted && o != table.UnsortedSortOrderID {
				order = &o
			}
			spec := meta.PartitionSpec()
			return rebuildDataFile(meta, df, &spec, partition, order)
		case sorted:
			return claimSorted(meta, df)
		}
		return df, nil
	}
}

// writeView returns tbl with no default sort order if unsorted, and, if
// dataDir is not "", with no partition spec, writing its files in dataDir.
func (s *Sink) writeView(tbl *table.Table, unsorted bool, dataDir string) (*table.Table, error) {
	meta := tbl.Metadata()
	unsorted = unsorted && meta.DefaultSortOrder() != table.UnsortedSortOrderID
	if !unsorted && dataDir == "" {
		return tbl, nil
	}
	b, err := table.MetadataBuilderFromBase(meta, tbl.MetadataLocation())
	if err != nil {
		return nil, err
	}
	if unsorted {
		order := table.UnsortedSortOrder // AddSortOrder sets the id of what it is given
		if err := b.AddSortOrder(&order); err != nil {
			return nil, err
		}
		if err := b.SetDefaultSortOrderID(-1); err != nil {
			return nil, err
		}
	}
	if dataDir != "" {
		spec := iceberg.NewPartitionSpec()
		if err := b.AddPartitionSpec(&spec, false); err != nil {
			return nil, err
		}
		if err := b.SetDefaultSpecID(-1); err != nil {
			return nil, err
		}
		if err := b.SetProperties(iceberg.Properties{table.WriteDataPathKey: dataDir}); err != nil {
			return nil, err
		}
	}
	view, err := b.Build()
	if err != nil {
		return nil, err
	}
	return table.New(tbl.Identifier(), view, tbl.MetadataLocation(), tbl.FS, s.cat), nil
}

// onePartition reports the directory and partition of files when all of
// them are of the table's current, partitioned spec, in one partition and
// one directory (as iceberg-go writes a partition's files), on a table
// that does not spread its files over hashed paths: a merge of them writes
// through an unpartitioned view into that directory.
func onePartition(meta table.Metadata, files []iceberg.DataFile) (dir string, partition map[int]any, ok bool) {
	spec := meta.PartitionSpec()
	if spec.IsUnpartitioned() || len(files) == 0 ||
		meta.Properties().GetBool(table.ObjectStoreEnabledKey, table.ObjectStoreEnabledDefault) {
		return "", nil, false
	}
	key := fmt.Sprint(files[0].Partition())
	dir = fileDir(files[0].FilePath())
	for _, df := range files {
		if int(df.SpecID()) != spec.ID() || fmt.Sprint(df.Partition()) != key || fileDir(df.FilePath()) != dir || dir == "" {
			return "", nil, false
		}
	}
	return dir, files[0].Partition(), true
}

// fileDir returns the location of the directory of the file at location p
// ("" if there is none). Not path.Dir, which would turn "file:///a/b" into
// "file:/a".
func fileDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// timePartition reports the directory and partition that every row of
// event times (ms) in [minMs, maxMs] falls in, when the table's spec
// partitions by time transforms (year, month, day, hour) of event_time
// alone, as the changelog's day(event_time) does, and both ends transform
// alike: those transforms are monotonic. The values and the directory are
// those iceberg-go's partitioned writer gives (bindPartitionTransform,
// partitionLocProvider in iceberg-go v0.7.0).
func timePartition(tbl *table.Table, minMs, maxMs int64) (dir string, partition map[int]any, ok bool) {
	meta := tbl.Metadata()
	spec := meta.PartitionSpec()
	// Event times are milliseconds; the column holds microseconds, and
	// beyond ±MaxInt64/1000 ms the product wraps and is no longer ordered.
	const limitMs = math.MaxInt64 / 1000
	if spec.IsUnpartitioned() || minMs > maxMs || minMs < -limitMs || maxMs > limitMs ||
		meta.Properties().GetBool(table.ObjectStoreEnabledKey, table.ObjectStoreEnabledDefault) {
		return "", nil, false
	}
	src, found := meta.CurrentSchema().FindFieldByID(fieldEventTime)
	if !found || src.Name != "event_time" {
		return "", nil, false
	}
	switch src.Type.(type) {
	case iceberg.TimestampTzType, iceberg.TimestampType:
	default:
		return "", nil, false
	}
	partition = make(map[int]any, spec.NumFields())
	values := make(partitionValues, 0, spec.NumFields())
	for _, f := range spec.Fields() {
		tt, isTime := f.Transform.(iceberg.TimeTransform)
		if f.SourceID() != fieldEventTime || !isTime {
			return "", nil, false
		}
		fn, err := tt.Transformer(src.Type)
		if err != nil {
			return "", nil, false
		}
		lo, hi := fn(iceberg.Timestamp(minMs*1000)), fn(iceberg.Timestamp(maxMs*1000))
		if !lo.Valid || lo != hi {
			return "", nil, false
		}
		var v any = lo.Val
		if _, day := f.Transform.(iceberg.DayTransform); day {
			v = iceberg.Date(lo.Val)
		}
		partition[f.FieldID] = v
		values = append(values, v)
	}
	root, err := url.Parse(tbl.Location())
	if err != nil {
		return "", nil, false
	}
	return root.JoinPath("data", spec.PartitionToPath(values, meta.CurrentSchema())).String(), partition, true
}

// partitionValues is a partition's values in spec order, as
// PartitionSpec.PartitionToPath reads them.
type partitionValues []any

func (p partitionValues) Size() int        { return len(p) }
func (p partitionValues) Get(i int) any    { return p[i] }
func (p partitionValues) Set(i int, v any) { p[i] = v }
