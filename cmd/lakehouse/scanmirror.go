package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/dot-do/lakehouse-rpc/iceberg"
)

// scanMirror prints rows of a CDC table's mirror. Its columns are the
// ones inferred or pinned for that table, so they are printed by name, as
// the table's schema has them.
func scanMirror(ctx context.Context, s *iceberg.Sink, name string, limit int, asJSON bool, w io.Writer) error {
	tbl, err := s.LoadMirrorTable(ctx, name)
	if err != nil {
		return err
	}
	sc := tbl.Scan()
	if limit > 0 {
		sc = sc.UseRowLimit(int64(limit))
	}
	_, recs, err := sc.ToArrowRecords(ctx)
	if err != nil {
		return fmt.Errorf("scan mirror of %s: %w", name, err)
	}
	var tw *tabwriter.Writer
	for rec, err := range recs {
		if err != nil {
			return fmt.Errorf("scan mirror of %s: %w", name, err)
		}
		if asJSON {
			err = array.RecordToJSON(rec, w)
		} else {
			if tw == nil {
				tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				header := make([]string, rec.NumCols())
				for i, f := range rec.Schema().Fields() {
					header[i] = strings.ToUpper(f.Name)
				}
				fmt.Fprintln(tw, strings.Join(header, "\t"))
			}
			printMirrorRows(tw, rec)
		}
		rec.Release()
		if err != nil {
			return err
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

func printMirrorRows(tw io.Writer, rec arrow.RecordBatch) {
	cells := make([]string, rec.NumCols())
	for i := range int(rec.NumRows()) {
		for j, col := range rec.Columns() {
			if col.IsNull(i) {
				cells[j] = "-"
				continue
			}
			v := col.ValueStr(i)
			cells[j] = clip(&v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
}
