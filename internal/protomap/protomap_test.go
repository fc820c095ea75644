package protomap

import (
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	lakehousev1 "github.com/dot-do/lakehouse-rpc/gen/lakehouse/v1"
)

func TestOperationRoundTrip(t *testing.T) {
	for _, op := range []codec.Op{codec.OpInsert, codec.OpUpdate, codec.OpDelete} {
		p := Operation(op)
		// The proto name is the legacy name with a prefix.
		if p.String() != "OPERATION_"+op.String() {
			t.Errorf("Operation(%v) = %v", op, p)
		}
		if back, ok := Op(p); !ok || back != op {
			t.Errorf("Op(%v) = %v, %v", p, back, ok)
		}
		for _, name := range []string{op.String(), p.String()} {
			if got, err := ParseOperation(name); err != nil || got != op {
				t.Errorf("ParseOperation(%q) = %v, %v", name, got, err)
			}
		}
	}
	if _, ok := Op(lakehousev1.Operation_OPERATION_UNSPECIFIED); ok {
		t.Error("OPERATION_UNSPECIFIED maps to a codec operation")
	}
	if _, err := ParseOperation("OPERATION_UNSPECIFIED"); err == nil {
		t.Error("ParseOperation accepts OPERATION_UNSPECIFIED")
	}
	if Operation(codec.Op(7)) != lakehousev1.Operation_OPERATION_UNSPECIFIED {
		t.Error("an unknown codec code maps to an operation")
	}
}

// TestEnumNames checks every proto value against the legacy name: the proto
// names are the legacy ones, upper-cased with a prefix.
func TestEnumNames(t *testing.T) {
	for v, name := range lakehousev1.AckStatus_name {
		if v == 0 {
			continue
		}
		if want := strings.ToLower(strings.TrimPrefix(name, "ACK_STATUS_")); AckStatusName(lakehousev1.AckStatus(v)) != want {
			t.Errorf("AckStatusName(%s) = %q, want %q", name, AckStatusName(lakehousev1.AckStatus(v)), want)
		}
	}
	for v, name := range lakehousev1.NackReason_name {
		if v == 0 {
			continue
		}
		if want := strings.ToLower(strings.TrimPrefix(name, "NACK_REASON_")); NackReasonName(lakehousev1.NackReason(v)) != want {
			t.Errorf("NackReasonName(%s) = %q, want %q", name, NackReasonName(lakehousev1.NackReason(v)), want)
		}
	}
	for v, name := range lakehousev1.ParentState_name {
		want := strings.ToLower(strings.TrimPrefix(name, "PARENT_STATE_"))
		if v == 0 {
			want = "idle"
		}
		if got := ParentStateName(lakehousev1.ParentState(v)); got != want {
			t.Errorf("ParentStateName(%s) = %q, want %q", name, got, want)
		}
	}
	for _, r := range []string{"manual", "shutdown", "buffer_full", "time_threshold"} {
		if got := FlushReason(r); got.String() != "FLUSH_REASON_"+strings.ToUpper(r) {
			t.Errorf("FlushReason(%q) = %v", r, got)
		}
	}
	if FlushReason("whatever") != lakehousev1.FlushReason_FLUSH_REASON_MANUAL {
		t.Error("an unknown flush reason is not manual")
	}
}
