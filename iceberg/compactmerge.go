package iceberg

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"iter"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/internal/pace"
)

// merger is a k-way merge of sorted Arrow streams by (source_id, entry_seq).
type merger struct {
	// mem allocates what the merge reads and builds: the context's
	// allocator (compute.WithAllocator), as iceberg-go's writer uses.
	mem    memory.Allocator
	schema *arrow.Schema
	srcCol int
	seqCol int
	inputs []*mergeInput
	// direct: the inputs are read by compactread.go, not iceberg-go's scan.
	direct bool
	h      mergeHeap
	err    error
	stops  []func()
	// pacer yields once in a while to ingest: a merge runs for seconds.
	pacer pace.Pacer
	// pause waits for commit passes (passgate.go); nil: never.
	pause *mergePause
}

type mergeInput struct {
	next func() (arrow.RecordBatch, error, bool)
	rec  arrow.RecordBatch
	row  int
	src  *array.String
	seq  *array.Int64
}

// mergeReads says how a merge may read its inputs.
type mergeReads int

const (
	// readDirectOrScan: itself where every input's columns are the
	// table's (compactread.go), else through iceberg-go's scan.
	readDirectOrScan mergeReads = iota
	// readScanOnly: through iceberg-go's scan; tests compare the two.
	readScanOnly
	// readDirectOnly: itself, or not at all (errMergeNeedsHeap): an
	// off-heap merge keeps its memory from iceberg-go's goroutines.
	readDirectOnly
)

// newMerger opens a merge of tasks' files, read as reads says. pause, if
// not nil, makes the merge step aside for commit passes.
func newMerger(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask, reads mergeReads, pause *mergePause) (*merger, error) {
	m := &merger{mem: compute.GetAllocator(ctx), pause: pause}
	if err := m.openInputs(ctx, tbl, tasks, reads); err != nil {
		m.close()
		return nil, err
	}
	if m.schema == nil {
		m.close()
		return nil, errors.New("compaction: no input files")
	}
	m.srcCol = fieldIndex(m.schema, "source_id")
	m.seqCol = fieldIndex(m.schema, "entry_seq")
	if m.srcCol < 0 || m.seqCol < 0 {
		m.close()
		return nil, errors.New("compaction: the table has no source_id or entry_seq column")
	}
	for _, in := range m.inputs {
		if err := m.advanceBatch(in); err != nil {
			m.close()
			return nil, err
		}
		if in.rec != nil {
			m.h.items = append(m.h.items, in)
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// openInputs opens the tasks' files for reading, directly when their
// columns are the table's (compactread.go), else through iceberg-go's scan.
func (m *merger) openInputs(ctx context.Context, tbl *table.Table, tasks []table.FileScanTask, reads mergeReads) error {
	if reads != readScanOnly {
		// The table's columns with their field ids: the files' schema,
		// and the one iceberg-go's writer writes. Batches of that very
		// schema skip its per-batch projection (toRequestedSchema).
		want, err := table.SchemaToArrowSchemaWithOptions(tbl.Schema(),
			table.ArrowSchemaOptions{IncludeFieldIDs: true, TableProperties: tbl.Properties()})
		if err != nil {
			return fmt.Errorf("compaction: the table's Arrow schema: %w", err)
		}
		inputs, stops, ok, err := openDirectInputs(ctx, tbl, tasks, want)
		if err != nil {
			return err
		}
		if ok {
			m.schema, m.inputs, m.stops, m.direct = want, inputs, stops, true
			return nil
		}
		if reads == readDirectOnly {
			return errMergeNeedsHeap
		}
	}
	for _, t := range tasks {
		sc, it, err := tbl.Scan(table.WithMaxConcurrency(1), table.WithArrowBatchSize(compactBatchRows)).
			ReadTasks(ctx, []table.FileScanTask{t})
		if err != nil {
			return fmt.Errorf("compaction: read %s: %w", t.File.FilePath(), err)
		}
		if m.schema == nil {
			m.schema = sc
		} else if !m.schema.Equal(sc) {
			return errors.New("compaction: input files read with different schemas")
		}
		next, stop := iter.Pull2(it)
		m.stops = append(m.stops, stop)
		m.inputs = append(m.inputs, &mergeInput{next: next})
	}
	return nil
}

func fieldIndex(sc *arrow.Schema, name string) int {
	if idx := sc.FieldIndices(name); len(idx) == 1 {
		return idx[0]
	}
	return -1
}

// advanceBatch moves in to its next non-empty batch, or to its end.
func (m *merger) advanceBatch(in *mergeInput) error {
	if in.rec != nil {
		in.rec.Release()
		in.rec = nil
	}
	for {
		rec, err, ok := in.next()
		if !ok {
			return nil
		}
		if err != nil {
			return fmt.Errorf("compaction: read: %w", err)
		}
		if rec.NumRows() == 0 {
			rec.Release()
			continue
		}
		src, ok1 := rec.Column(m.srcCol).(*array.String)
		seq, ok2 := rec.Column(m.seqCol).(*array.Int64)
		if !ok1 || !ok2 {
			rec.Release()
			return fmt.Errorf("compaction: unexpected column types %s, %s", rec.Column(m.srcCol).DataType(), rec.Column(m.seqCol).DataType())
		}
		in.rec, in.row, in.src, in.seq = rec, 0, src, seq
		m.pacer.Yield()
		m.pause.wait()
		return nil
	}
}

// batches yields the merged rows: a run of one input's rows that sorts
// before every other input's next row, if it has at least compactSliceRows
// rows, as a slice of that input's batch (no copy); shorter runs copied row
// by row into batches of at most compactBatchRows rows. Staged files hold
// long runs (each a source's rows of one stage), so most rows are not
// copied: copying every value through a builder was about a third of a
// merge's CPU.
func (m *merger) batches() iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		b := array.NewRecordBuilder(m.mem, m.schema)
		defer b.Release()
		n := 0
		flush := func() bool {
			if n == 0 {
				return true
			}
			n = 0
			return yield(b.NewRecordBatch(), nil)
		}
		fail := func(err error) {
			m.err = err
			yield(nil, err)
		}
		for m.h.Len() > 0 {
			in := m.h.items[0]
			end := max(m.runEnd(), in.row+1)
			if end-in.row >= compactSliceRows {
				if !flush() || !yield(in.rec.NewSlice(int64(in.row), int64(end)), nil) {
					return
				}
				in.row = end
			}
			for ; in.row < end; in.row++ {
				for c := 0; c < int(m.schema.NumFields()); c++ {
					if err := appendValue(b.Field(c), in.rec.Column(c), in.row); err != nil {
						fail(err)
						return
					}
				}
				if n++; n == compactBatchRows && !flush() {
					return
				}
			}
			if in.row == int(in.rec.NumRows()) {
				if err := m.advanceBatch(in); err != nil {
					fail(err)
					return
				}
			}
			if in.rec == nil {
				heap.Pop(&m.h)
			} else {
				heap.Fix(&m.h, 0)
			}
		}
		flush()
	}
}

// runEnd returns the end (exclusive) of the top input's rows, from its
// current row, that sort before the next row of every other input: the
// smaller of the heap's top's children. The rows of a batch are sorted, so
// a binary search finds it. (Were a file not sorted, every row would still
// be written once: the row count check stands.)
func (m *merger) runEnd() int {
	in := m.h.items[0]
	var next *mergeInput
	for _, i := range []int{1, 2} {
		if i < len(m.h.items) && (next == nil || keyLess(m.h.items[i], next)) {
			next = m.h.items[i]
		}
	}
	if next == nil {
		return int(in.rec.NumRows())
	}
	src, seq := next.src.Value(next.row), next.seq.Value(next.row)
	return in.row + sort.Search(int(in.rec.NumRows())-in.row, func(k int) bool {
		s := in.src.Value(in.row + k)
		return s > src || s == src && in.seq.Value(in.row+k) >= seq
	})
}

func (m *merger) close() {
	for _, in := range m.inputs {
		if in.rec != nil {
			in.rec.Release()
			in.rec = nil
		}
	}
	for _, stop := range m.stops {
		stop()
	}
}

// appendValue copies row i of src to b, for the column types of the
// changelog schema as iceberg-go reads them.
func appendValue(b array.Builder, src arrow.Array, i int) error {
	if src.IsNull(i) {
		b.AppendNull()
		return nil
	}
	switch a := src.(type) {
	case *array.String:
		b.(*array.StringBuilder).Append(a.Value(i))
	case *array.LargeString:
		b.(*array.LargeStringBuilder).Append(a.Value(i))
	case *array.Int64:
		b.(*array.Int64Builder).Append(a.Value(i))
	case *array.Int32:
		b.(*array.Int32Builder).Append(a.Value(i))
	case *array.Timestamp:
		b.(*array.TimestampBuilder).Append(a.Value(i))
	default:
		return fmt.Errorf("compaction: unsupported column type %s", src.DataType())
	}
	return nil
}

type mergeHeap struct{ items []*mergeInput }

func (h *mergeHeap) Len() int           { return len(h.items) }
func (h *mergeHeap) Less(i, j int) bool { return keyLess(h.items[i], h.items[j]) }
func (h *mergeHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *mergeHeap) Push(x any)         { h.items = append(h.items, x.(*mergeInput)) }
func (h *mergeHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// keyLess orders two inputs by their current rows' (source_id, entry_seq).
func keyLess(a, b *mergeInput) bool {
	sa, sb := a.src.Value(a.row), b.src.Value(b.row)
	if sa != sb {
		return sa < sb
	}
	return a.seq.Value(a.row) < b.seq.Value(b.row)
}
