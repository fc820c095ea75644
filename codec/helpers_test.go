package codec_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// vectorsDir is shared/spec/vectors beside the repository root, seen from the
// package directory (repo/codec -> repo/../shared/spec/vectors).
var vectorsDir = filepath.Join("..", "..", "shared", "spec", "vectors")

// vectorCase is one entry of vectors/manifest.json.
type vectorCase struct {
	Name       string          `json:"name"`
	File       string          `json:"file"`
	Kind       string          `json:"kind"`
	Input      json.RawMessage `json:"input"`
	Decoded    json.RawMessage `json:"decoded"`
	ChecksumOK *bool           `json:"checksum_verifies_with_field_zeroed"`
	Note       string          `json:"note"`

	data []byte // the .bin file
}

// loadVectors reads the manifest and every .bin it names. A missing folder is
// a hard failure: the vectors are the contract with the legacy children.
func loadVectors(tb testing.TB) []vectorCase {
	tb.Helper()
	abs, _ := filepath.Abs(vectorsDir)
	raw, err := os.ReadFile(filepath.Join(vectorsDir, "manifest.json"))
	if err != nil {
		tb.Fatalf("legacy protocol vectors missing: cannot read %s: %v", filepath.Join(abs, "manifest.json"), err)
	}
	var cases []vectorCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		tb.Fatalf("%s: %v", filepath.Join(abs, "manifest.json"), err)
	}
	if len(cases) == 0 {
		tb.Fatalf("%s lists no cases", filepath.Join(abs, "manifest.json"))
	}
	for i := range cases {
		c := &cases[i]
		c.data, err = os.ReadFile(filepath.Join(vectorsDir, c.File))
		if err != nil {
			tb.Fatalf("vector %s: %v", c.Name, err)
		}
	}
	return cases
}

// w1Frame is the encoded W1 batch number 1 (1000 entries).
func w1Frame(tb testing.TB) []byte {
	tb.Helper()
	f, err := codec.EncodeBatch(workload.Batch("src", 1))
	if err != nil {
		tb.Fatalf("encode W1: %v", err)
	}
	return f
}

// batchDiff describes how two batches differ in their message content (not
// the decode-only fields PayloadSize, Checksum, ChecksumOK); "" when equal.
// Byte fields compare by content, except that CorrelationID, Before and After
// must also agree on being absent (nil) or present.
func batchDiff(want, got *codec.Batch) string {
	var d []string
	if want.Timestamp != got.Timestamp {
		d = append(d, fmt.Sprintf("Timestamp %d != %d", want.Timestamp, got.Timestamp))
	}
	if want.Sequence != got.Sequence {
		d = append(d, fmt.Sprintf("Sequence %d != %d", want.Sequence, got.Sequence))
	}
	if want.Retry != got.Retry {
		d = append(d, fmt.Sprintf("Retry %v != %v", want.Retry, got.Retry))
	}
	if !bytes.Equal(want.SourceID, got.SourceID) {
		d = append(d, fmt.Sprintf("SourceID %q != %q", want.SourceID, got.SourceID))
	}
	if !optEqual(want.CorrelationID, got.CorrelationID) {
		d = append(d, fmt.Sprintf("CorrelationID %s != %s", optString(want.CorrelationID), optString(got.CorrelationID)))
	}
	if len(want.Entries) != len(got.Entries) {
		d = append(d, fmt.Sprintf("len(Entries) %d != %d", len(want.Entries), len(got.Entries)))
	} else {
		for i := range want.Entries {
			w, g := &want.Entries[i], &got.Entries[i]
			if w.Sequence != g.Sequence || w.Timestamp != g.Timestamp || w.Op != g.Op ||
				!bytes.Equal(w.Table, g.Table) || !bytes.Equal(w.RowID, g.RowID) ||
				!optEqual(w.Before, g.Before) || !optEqual(w.After, g.After) {
				d = append(d, fmt.Sprintf("Entries[%d]:\n  want %s\n  got  %s", i, entryString(w), entryString(g)))
				if len(d) > 5 {
					break
				}
			}
		}
	}
	return strings.Join(d, "\n")
}

func optEqual(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

func optString(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q", b)
}

func entryString(e *codec.Entry) string {
	return fmt.Sprintf("{seq %d ts %d %v table %q row %q before %s after %s}",
		e.Sequence, e.Timestamp, e.Op, e.Table, e.RowID, optString(e.Before), optString(e.After))
}

// decodeAny unmarshals JSON into any, keeping numbers as json.Number.
func decodeAny(tb testing.TB, data []byte) any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decode JSON %s: %v", data, err)
	}
	return v
}

// toJSONAny marshals v and decodes it back into any (numbers as json.Number).
func toJSONAny(tb testing.TB, v any) any {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal %T: %v", v, err)
	}
	return decodeAny(tb, data)
}

// jsonDiff compares two decoded JSON values semantically: objects by key,
// numbers by exact value (so 1e-07 equals 1e-7), and lists every difference.
func jsonDiff(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want object, got %T %v", path, got, got)}
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var d []string
		for _, k := range sorted {
			wv, wok := w[k]
			gv, gok := g[k]
			switch {
			case !gok:
				d = append(d, fmt.Sprintf("%s.%s: missing, want %v", path, k, wv))
			case !wok:
				d = append(d, fmt.Sprintf("%s.%s: unexpected %v", path, k, gv))
			default:
				d = append(d, jsonDiff(path+"."+k, wv, gv)...)
			}
		}
		return d
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want array, got %T %v", path, got, got)}
		}
		if len(w) != len(g) {
			return []string{fmt.Sprintf("%s: want %d elements, got %d", path, len(w), len(g))}
		}
		var d []string
		for i := range w {
			d = append(d, jsonDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return d
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return []string{fmt.Sprintf("%s: want number %v, got %T %v", path, w, got, got)}
		}
		if w == g {
			return nil
		}
		wr, ok1 := new(big.Rat).SetString(string(w))
		gr, ok2 := new(big.Rat).SetString(string(g))
		if !ok1 || !ok2 || wr.Cmp(gr) != 0 {
			return []string{fmt.Sprintf("%s: want %v, got %v", path, w, g)}
		}
		return nil
	default:
		if !reflect.DeepEqual(want, got) {
			return []string{fmt.Sprintf("%s: want %#v, got %#v", path, want, got)}
		}
		return nil
	}
}

// assertJSONEqual fails tb when the JSON texts or values differ semantically.
func assertJSONEqual(tb testing.TB, what string, want, got any) {
	tb.Helper()
	if d := jsonDiff("$", want, got); len(d) > 0 {
		tb.Errorf("%s differs from the manifest:\n  %s", what, strings.Join(d, "\n  "))
	}
}

// legacyAck is the legacy (TypeScript) AckMessage shape.
type legacyAck struct {
	Type           string `json:"type"`
	Timestamp      uint64 `json:"timestamp"`
	CorrelationID  string `json:"correlationId,omitempty"`
	SequenceNumber uint64 `json:"sequenceNumber"`
	Status         string `json:"status"`
}

// legacyNack is the legacy (TypeScript) NackMessage shape.
type legacyNack struct {
	Type           string `json:"type"`
	Timestamp      uint64 `json:"timestamp"`
	CorrelationID  string `json:"correlationId,omitempty"`
	SequenceNumber uint64 `json:"sequenceNumber"`
	Reason         string `json:"reason"`
	ErrorMessage   string `json:"errorMessage"`
	ShouldRetry    bool   `json:"shouldRetry"`
	RetryDelayMs   uint32 `json:"retryDelayMs,omitempty"`
}

func ackMessage(a *codec.Ack) legacyAck {
	// An unknown status code reads as ok on the legacy side.
	status := "ok"
	if a.Status <= codec.AckFallback {
		status = a.Status.String()
	}
	return legacyAck{Type: "ack", Timestamp: a.Timestamp, CorrelationID: string(a.CorrelationID),
		SequenceNumber: a.Sequence, Status: status}
}

func nackMessage(n *codec.Nack) legacyNack {
	return legacyNack{Type: "nack", Timestamp: n.Timestamp, CorrelationID: string(n.CorrelationID),
		SequenceNumber: n.Sequence, Reason: n.Reason.String(), ErrorMessage: n.Message,
		ShouldRetry: n.ShouldRetry, RetryDelayMs: n.RetryDelayMs}
}

func ackFromMessage(tb testing.TB, m legacyAck) *codec.Ack {
	tb.Helper()
	st, err := codec.ParseAckStatus(m.Status)
	if err != nil {
		tb.Fatal(err)
	}
	a := &codec.Ack{Timestamp: m.Timestamp, Sequence: m.SequenceNumber, Status: st}
	if m.CorrelationID != "" {
		a.CorrelationID = []byte(m.CorrelationID)
	}
	return a
}

func nackFromMessage(tb testing.TB, m legacyNack) *codec.Nack {
	tb.Helper()
	r, err := codec.ParseNackReason(m.Reason)
	if err != nil {
		tb.Fatal(err)
	}
	n := &codec.Nack{Timestamp: m.Timestamp, Sequence: m.SequenceNumber, Reason: r,
		ShouldRetry: m.ShouldRetry, RetryDelayMs: m.RetryDelayMs, Message: m.ErrorMessage}
	if m.CorrelationID != "" {
		n.CorrelationID = []byte(m.CorrelationID)
	}
	return n
}

// jsFalsy reports whether raw JSON is a JavaScript falsy value (0, -0, "",
// null, false): the legacy encoder writes those as length 0, i.e. absent.
func jsFalsy(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	switch string(raw) {
	case "", "null", "false", `""`:
		return true
	}
	if r, ok := new(big.Rat).SetString(string(raw)); ok && r.Sign() == 0 {
		return true
	}
	return false
}

// decodedW1 is W1 batch 1 as decoded from its frame.
func decodedW1(tb testing.TB) *codec.Batch {
	tb.Helper()
	b, err := codec.DecodeBatch(w1Frame(tb), codec.DecodeOptions{StrictChecksum: true})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestJSONDiff checks the comparison the vector tests rely on.
func TestJSONDiff(t *testing.T) {
	eq := func(a, b string) bool {
		return len(jsonDiff("$", decodeAny(t, []byte(a)), decodeAny(t, []byte(b)))) == 0
	}
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{`{"a":1e-07,"b":[1,{"c":null}]}`, `{"b":[1.0,{"c":null}],"a":1e-7}`, true},
		{`{"a":9007199254740993}`, `{"a":9007199254740992}`, false},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`{"a":1,"b":2}`, `{"a":1}`, false},
		{`[1,2]`, `[2,1]`, false},
		{`{"a":"1"}`, `{"a":1}`, false},
		{`{"a":true}`, `{"a":false}`, false},
		{`{"a":[]}`, `{"a":{}}`, false},
	} {
		if got := eq(c.a, c.b); got != c.same {
			t.Errorf("jsonDiff(%s, %s): same = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}
