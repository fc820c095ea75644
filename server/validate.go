package server

import (
	"fmt"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Input rules beyond what the codec checks. A batch that breaks one is nacked
// invalid_format, naming the entry and the field; nothing of it is stored.
//
// Every source:
//   - table is not empty;
//   - timestamp is in [minTimestampMs, maxTimestampMs]: after the epoch and
//     before year 10000 (a day partition of year 10000 cannot be read by
//     most Iceberg readers).
//
// Native sources (SEQUENCE_MODE_BATCH) also:
//   - entry sequences increase strictly within the batch, and the first is
//     above the source's last accepted entry sequence (checked in accept,
//     under the source's lock), so (source, entry_seq) identifies a row;
//   - row_id is not empty;
//   - INSERT has after and no before, UPDATE has both, DELETE has before
//     and no after: the shapes legacy children produce.
//
// Legacy sources (SEQUENCE_MODE_ENTRY, the bridge) keep what the original
// protocol allows: children write falsy row images (0, "", null, false) as
// absent, so an INSERT may arrive without after and an UPDATE without
// before; a resent or repeated entry sequence is a duplicate, dropped by the
// dedup window, not an error; and an empty row id is stored as it is.
const (
	minTimestampMs = 1
	maxTimestampMs = 253402300799999 // 9999-12-31T23:59:59.999Z
)

// inputError is a broken input rule.
type inputError struct {
	index int    // entry index in the batch
	field string // proto field name
	msg   string
}

func (e *inputError) Error() string {
	return fmt.Sprintf("entries[%d].%s %s", e.index, e.field, e.msg)
}

// validateEntries checks the rules that need only the batch itself.
func validateEntries(es []codec.Entry, mode lakehousev1.SequenceMode) error {
	native := mode != lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY
	for i := range es {
		e := &es[i]
		if len(e.Table) == 0 {
			return &inputError{i, "table", "is empty: every entry needs its table name"}
		}
		if e.Timestamp < minTimestampMs || e.Timestamp > maxTimestampMs {
			return &inputError{i, "timestamp_ms", fmt.Sprintf("%d is outside [%d, %d] (ms since the Unix epoch, before year 10000)",
				int64(e.Timestamp), minTimestampMs, maxTimestampMs)}
		}
		if !native {
			continue
		}
		if i > 0 && e.Sequence <= es[i-1].Sequence {
			return &inputError{i, "sequence", fmt.Sprintf("%d is not above entries[%d].sequence %d: entry sequences must increase strictly",
				e.Sequence, i-1, es[i-1].Sequence)}
		}
		if len(e.RowID) == 0 {
			return &inputError{i, "row_id", "is empty"}
		}
		if err := checkImages(e, i); err != nil {
			return err
		}
	}
	return nil
}

// checkImages checks that an entry's row images match its operation.
func checkImages(e *codec.Entry, i int) error {
	hasBefore, hasAfter := len(e.Before) > 0, len(e.After) > 0
	switch e.Op {
	case codec.OpInsert:
		if !hasAfter {
			return &inputError{i, "after", "is missing: an INSERT carries the new row"}
		}
		if hasBefore {
			return &inputError{i, "before", "is set: an INSERT has no old row"}
		}
	case codec.OpUpdate:
		if !hasBefore {
			return &inputError{i, "before", "is missing: an UPDATE carries the old row"}
		}
		if !hasAfter {
			return &inputError{i, "after", "is missing: an UPDATE carries the new row"}
		}
	case codec.OpDelete:
		if !hasBefore {
			return &inputError{i, "before", "is missing: a DELETE carries the old row"}
		}
		if hasAfter {
			return &inputError{i, "after", "is set: a DELETE has no new row"}
		}
	}
	return nil
}

// checkAfterLast checks that a native batch's entries follow the source's
// last accepted entry sequence. Caller holds src.mu.
func checkAfterLast(es []codec.Entry, lastEntry uint64) error {
	if len(es) > 0 && es[0].Sequence <= lastEntry {
		return &inputError{0, "sequence", fmt.Sprintf("%d is not above the source's last accepted entry sequence %d (Connected.last_entry_sequence)",
			es[0].Sequence, lastEntry)}
	}
	return nil
}
