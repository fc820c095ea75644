// Package protomap maps between the proto enums of lakehouse.v1 and the
// legacy protocol's wire codes and names, in one place. The two number the
// same things differently (the proto reserves 0 for "unspecified", so
// OPERATION_INSERT is 1 where the codec's INSERT is 0), so the mappings are
// explicit tables, never arithmetic on the numbers.
package protomap

import (
	"fmt"
	"strings"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

// Operation returns the proto operation of a codec operation
// (OPERATION_UNSPECIFIED for an unknown code).
func Operation(op codec.Op) lakehousev1.Operation {
	switch op {
	case codec.OpInsert:
		return lakehousev1.Operation_OPERATION_INSERT
	case codec.OpUpdate:
		return lakehousev1.Operation_OPERATION_UPDATE
	case codec.OpDelete:
		return lakehousev1.Operation_OPERATION_DELETE
	}
	return lakehousev1.Operation_OPERATION_UNSPECIFIED
}

// Op returns the codec operation of a proto operation; false for
// OPERATION_UNSPECIFIED and unknown values.
func Op(o lakehousev1.Operation) (codec.Op, bool) {
	switch o {
	case lakehousev1.Operation_OPERATION_INSERT:
		return codec.OpInsert, true
	case lakehousev1.Operation_OPERATION_UPDATE:
		return codec.OpUpdate, true
	case lakehousev1.Operation_OPERATION_DELETE:
		return codec.OpDelete, true
	}
	return 0, false
}

// ParseOperation parses an operation name, legacy ("INSERT") or proto
// ("OPERATION_INSERT").
func ParseOperation(name string) (codec.Op, error) {
	if v, ok := lakehousev1.Operation_value[name]; ok {
		if op, ok := Op(lakehousev1.Operation(v)); ok {
			return op, nil
		}
	}
	op, err := codec.ParseOp(name)
	if err != nil {
		return 0, fmt.Errorf("%w (want INSERT, UPDATE or DELETE)", err)
	}
	return op, nil
}

// AckStatus returns the codec ack status of a proto one. An unknown value is
// ok, as legacy children read an unknown code.
func AckStatus(s lakehousev1.AckStatus) codec.AckStatus {
	switch s {
	case lakehousev1.AckStatus_ACK_STATUS_BUFFERED:
		return codec.AckBuffered
	case lakehousev1.AckStatus_ACK_STATUS_PERSISTED:
		return codec.AckPersisted
	case lakehousev1.AckStatus_ACK_STATUS_DUPLICATE:
		return codec.AckDuplicate
	case lakehousev1.AckStatus_ACK_STATUS_FALLBACK:
		return codec.AckFallback
	}
	return codec.AckOK
}

// NackReason returns the codec nack reason of a proto one; an unknown value
// is internal_error.
func NackReason(r lakehousev1.NackReason) codec.NackReason {
	switch r {
	case lakehousev1.NackReason_NACK_REASON_BUFFER_FULL:
		return codec.NackBufferFull
	case lakehousev1.NackReason_NACK_REASON_RATE_LIMITED:
		return codec.NackRateLimited
	case lakehousev1.NackReason_NACK_REASON_INVALID_SEQUENCE:
		return codec.NackInvalidSequence
	case lakehousev1.NackReason_NACK_REASON_INVALID_FORMAT:
		return codec.NackInvalidFormat
	case lakehousev1.NackReason_NACK_REASON_SHUTTING_DOWN:
		return codec.NackShuttingDown
	}
	return codec.NackInternalError
}

// AckStatusName is the legacy name of an ack status ("ok", "buffered"...).
func AckStatusName(s lakehousev1.AckStatus) string { return AckStatus(s).String() }

// NackReasonName is the legacy name of a nack reason ("buffer_full"...).
func NackReasonName(r lakehousev1.NackReason) string { return NackReason(r).String() }

// ParentStateName is the legacy name of a server state ("idle",
// "receiving", "flushing", "recovering", "error").
func ParentStateName(s lakehousev1.ParentState) string {
	switch s {
	case lakehousev1.ParentState_PARENT_STATE_RECEIVING:
		return "receiving"
	case lakehousev1.ParentState_PARENT_STATE_FLUSHING:
		return "flushing"
	case lakehousev1.ParentState_PARENT_STATE_RECOVERING:
		return "recovering"
	case lakehousev1.ParentState_PARENT_STATE_ERROR:
		return "error"
	}
	return "idle"
}

// FlushReason maps a legacy flush_request reason (manual, shutdown,
// buffer_full, time_threshold) to the proto enum; anything else is a manual
// flush.
func FlushReason(legacy string) lakehousev1.FlushReason {
	switch strings.ToLower(legacy) {
	case "shutdown":
		return lakehousev1.FlushReason_FLUSH_REASON_SHUTDOWN
	case "buffer_full":
		return lakehousev1.FlushReason_FLUSH_REASON_BUFFER_FULL
	case "time_threshold":
		return lakehousev1.FlushReason_FLUSH_REASON_TIME_THRESHOLD
	}
	return lakehousev1.FlushReason_FLUSH_REASON_MANUAL
}

// SequenceModeName is "entry" for entry-sequenced (legacy) sources and
// "batch" otherwise.
func SequenceModeName(m lakehousev1.SequenceMode) string {
	if m == lakehousev1.SequenceMode_SEQUENCE_MODE_ENTRY {
		return "entry"
	}
	return "batch"
}
