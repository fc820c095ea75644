package iceberg

import (
	"fmt"

	iceberg "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// claimSorted returns df with the table's default sort order id, for data
// files the sink wrote sorted (through an unsorted writeView): every staged file, and every
// compaction output whose inputs all claim the order (claimOrder). Readers
// and planners may then rely on the order. iceberg-go v0.7.0's WriteRecords
// never claims an order in the manifest entry, so the entry is rebuilt.
func claimSorted(meta table.Metadata, df iceberg.DataFile) (iceberg.DataFile, error) {
	order := meta.DefaultSortOrder()
	if order == table.UnsortedSortOrderID {
		return df, nil
	}
	spec := meta.PartitionSpecByID(int(df.SpecID()))
	if spec == nil {
		return nil, fmt.Errorf("data file %s: no partition spec %d", df.FilePath(), df.SpecID())
	}
	return rebuildDataFile(meta, df, spec, df.Partition(), &order)
}

// rebuildDataFile returns df's manifest entry with every statistic of df,
// bound to spec and partition, and claiming sortOrder if it is not nil.
func rebuildDataFile(meta table.Metadata, df iceberg.DataFile, spec *iceberg.PartitionSpec, partition map[int]any, sortOrder *int) (iceberg.DataFile, error) {
	b, err := iceberg.NewDataFileBuilder(*spec, df.ContentType(), df.FilePath(), df.FileFormat(),
		partition, partitionLogicalTypes(meta, spec), nil, df.Count(), df.FileSizeBytes())
	if err != nil {
		return nil, fmt.Errorf("data file %s: %w", df.FilePath(), err)
	}
	b.ColumnSizes(df.ColumnSizes()).
		ValueCounts(df.ValueCounts()).
		NullValueCounts(df.NullValueCounts()).
		NaNValueCounts(df.NaNValueCounts()).
		LowerBoundValues(df.LowerBoundValues()).
		UpperBoundValues(df.UpperBoundValues()).
		SplitOffsets(df.SplitOffsets())
	if sortOrder != nil {
		b.SortOrderID(*sortOrder)
	} else if id := df.SortOrderID(); id != nil {
		b.SortOrderID(*id)
	}
	if d := df.DistinctValueCounts(); len(d) > 0 {
		b.DistinctValueCounts(d)
	}
	if k := df.KeyMetadata(); len(k) > 0 {
		b.KeyMetadata(k)
	}
	return b.Build(), nil
}

// partitionLogicalTypes returns the Avro logical types of spec's partition
// values, as iceberg-go's own writer records them.
func partitionLogicalTypes(meta table.Metadata, spec *iceberg.PartitionSpec) map[int]string {
	logical := make(map[int]string)
	for _, field := range spec.Fields() {
		src, ok := meta.CurrentSchema().FindFieldByID(field.SourceID())
		if !ok {
			continue
		}
		switch field.Transform.ResultType(src.Type).(type) {
		case iceberg.DateType:
			logical[field.FieldID] = "date"
		case iceberg.TimestampType, iceberg.TimestampTzType:
			logical[field.FieldID] = "timestamp-micros"
		}
	}
	return logical
}

// claimOrder reports whether every file of files claims the table's
// default sort order (and the table has one).
func claimOrder(meta table.Metadata, files []iceberg.DataFile) bool {
	order := meta.DefaultSortOrder()
	if order == table.UnsortedSortOrderID {
		return false
	}
	for _, df := range files {
		if id := df.SortOrderID(); id == nil || *id != order {
			return false
		}
	}
	return true
}
