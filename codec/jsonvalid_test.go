package codec_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/codec"
	"github.com/dot-do/lakehouse-rpc/internal/workload"
)

// jsonValidCases are inputs at the edges of the grammar; each test checks
// ValidJSON against encoding/json.Valid and against the expected answer.
var jsonValidCases = []struct {
	in   string
	want bool
}{
	// Scalars and whitespace.
	{``, false}, {` `, false}, {"\t\r\n ", false},
	{`0`, true}, {` 0 `, true}, {"\t\r\n0\t\r\n", true}, {"\f0", false}, {"0\v", false}, {"\u00a00", false},
	{`true`, true}, {`false`, true}, {`null`, true},
	{`tru`, false}, {`truex`, false}, {`True`, false}, {`nul`, false}, {`nulll`, false}, {`fals`, false}, {`falsee`, false},
	{`true false`, false}, {`1 2`, false}, {`{}{}`, false}, {`[] `, true}, {`x`, false}, {"\xef\xbb\xbf0", false},
	{"0\x00", false}, {"\x00", false},
	// Numbers.
	{`-0`, true}, {`-`, false}, {`--1`, false}, {`+1`, false}, {`01`, false}, {`-01`, false}, {`00`, false},
	{`1.`, false}, {`.5`, false}, {`1.5`, true}, {`1.5.5`, false}, {`1e`, false}, {`1e+`, false}, {`1e-`, false},
	{`1E5`, true}, {`1e+5`, true}, {`1e-05`, true}, {`1.0e1`, true}, {`1.e1`, false}, {`0.0`, true}, {`-0.0e-0`, true},
	{`1e5.5`, false}, {`123456789012345678901234567890`, true}, {`1x`, false}, {`-a`, false}, {`0x10`, false},
	{`NaN`, false}, {`Infinity`, false}, {`-Infinity`, false}, {`[1,]`, false}, {`[-]`, false}, {`[1e]`, false},
	// Strings.
	{`""`, true}, {`"`, false}, {`"abc`, false}, {`"a"b"`, false}, {`'a'`, false},
	{`"\""`, true}, {`"\\"`, true}, {`"\/"`, true}, {`"\b\f\n\r\t"`, true}, {`"\a"`, false}, {`"\x41"`, false},
	{`"\'"`, false}, {`"\`, false}, {`"\"`, false}, {`"\u0041"`, true}, {`"\u00e9\uABCD\uabcd"`, true},
	{`"\u004"`, false}, {`"\u004g"`, false}, {`"\u"`, false}, {`"\U0041"`, false},
	{`"\ud800"`, true}, {`"\udc00\ud800"`, true}, {`"\ud83d\ude00"`, true},
	{"\"\x00\"", false}, {"\"\x1f\"", false}, {"\"\t\"", false}, {"\"\n\"", false}, {"\"\x7f\"", true}, {"\" \"", true},
	{"\"0123456789abcdef\x01\"", false}, {"\"0123456789abcdef\\\"\"", true}, {"\"01234567\"", true}, {"\"0123456\"", true},
	// UTF-8 in strings: valid, and invalid, both accepted as encoding/json does.
	{`"é"`, true}, {`"分片"`, true}, {`"😀"`, true},
	{"\"\xff\"", true}, {"\"\xc3\"", true}, {"\"\xc3\x28\"", true}, {"\"\xed\xa0\x80\"", true}, {"\"\xf4\x90\x80\x80\"", true},
	{"\"\x80\x80\x80\x80\x80\x80\x80\x80\x80\"", true}, {"\xff", false}, {"[\xc3\xa9]", false},
	// Objects and arrays.
	{`{}`, true}, {`[]`, true}, {`{ }`, true}, {`[ ]`, true}, {`{`, false}, {`[`, false}, {`}`, false}, {`]`, false},
	{`{]`, false}, {`[}`, false}, {`{"a":1]`, false}, {`[1}`, false}, {`{"a":1}`, true}, {` { "a" : 1 , "b" : [ ] } `, true},
	{`{"a"}`, false}, {`{"a":}`, false}, {`{"a" 1}`, false}, {`{a:1}`, false}, {`{1:1}`, false}, {`{"a":1,}`, false},
	{`{,"a":1}`, false}, {`{"a":1,,"b":2}`, false}, {`{"a":1 "b":2}`, false}, {`{"a":1}}`, false}, {`{"a":{"b":{}}}`, true},
	{`{"a":1,"a":2}`, true}, {`[,]`, false}, {`[,1]`, false}, {`[1,,2]`, false}, {`[1 2]`, false}, {`[[]]`, true},
	{`[[],[{}],{"x":[null,true,false,"s",-1.5e3]}]`, true}, {`[[]`, false}, {`[]]`, false}, {`{"a":[}`, false},
	{`{"a":1`, false}, {`{"a":1,`, false}, {`{"a":`, false}, {`{"a"`, false}, {`{"`, false}, {`["a",`, false},
	{`{"id":1,"name":"user-1","tags":["a","b"]}`, true},
}

func TestValidJSON(t *testing.T) {
	for _, tc := range jsonValidCases {
		if std := json.Valid([]byte(tc.in)); std != tc.want {
			t.Errorf("test case wrong: encoding/json.Valid(%q) = %v", tc.in, std)
		}
		if got := codec.ValidJSON([]byte(tc.in)); got != tc.want {
			t.Errorf("ValidJSON(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestValidJSONDepth: 10,000 levels are valid, 10,001 are not, as in
// encoding/json, and deep input does not grow the stack.
func TestValidJSONDepth(t *testing.T) {
	for _, tc := range []struct {
		open, close string
		per         int // levels per repetition
	}{{"[", "]", 1}, {`{"a":`, "}", 1}, {`[{"a":`, "}]", 2}} {
		for _, depth := range []int{1, 63, 64, 65, 128, codec.MaxJSONDepth - 1, codec.MaxJSONDepth, codec.MaxJSONDepth + 1, 100000} {
			levels := depth / tc.per
			in := []byte(strings.Repeat(tc.open, levels) + "0" + strings.Repeat(tc.close, levels))
			if got, want := codec.ValidJSON(in), json.Valid(in); got != want {
				t.Errorf("%s x %d: ValidJSON %v, encoding/json %v", tc.open, levels, got, want)
			}
		}
	}
	limit := strings.Repeat("[", codec.MaxJSONDepth) + strings.Repeat("]", codec.MaxJSONDepth)
	if !codec.ValidJSON([]byte(limit)) {
		t.Error("10,000 nested arrays refused")
	}
	if codec.ValidJSON([]byte("[" + limit + "]")) {
		t.Error("10,001 nested arrays accepted")
	}
	// Unclosed deep input, and a mismatch deep down.
	if codec.ValidJSON([]byte(strings.Repeat("[", 5000))) || codec.ValidJSON([]byte(strings.Repeat("[", 70)+strings.Repeat("}", 70))) {
		t.Error("unbalanced deep input accepted")
	}
	mixed := strings.Repeat(`[{"k":`, 100) + "1" + strings.Repeat("}]", 100)
	if !codec.ValidJSON([]byte(mixed)) || codec.ValidJSON([]byte(mixed[:len(mixed)-2]+"]}")) {
		t.Error("mixed nesting misjudged")
	}
}

// TestValidJSONW1 checks every row image of a W1 batch, and that the
// validator allocates nothing.
func TestValidJSONW1(t *testing.T) {
	b := workload.Batch("s", 1)
	for i := range b.Entries {
		for _, p := range [][]byte{b.Entries[i].Before, b.Entries[i].After} {
			if p != nil && !codec.ValidJSON(p) {
				t.Fatalf("entry %d: %s refused", i, p)
			}
		}
	}
	row := b.Entries[0].After
	if n := testing.AllocsPerRun(100, func() { codec.ValidJSON(row) }); n != 0 {
		t.Errorf("ValidJSON allocates %v times per call", n)
	}
}

// FuzzValidJSON checks that ValidJSON agrees with encoding/json.Valid.
// go test -run='^$' -fuzz=FuzzValidJSON -fuzztime=60s ./codec
func FuzzValidJSON(f *testing.F) {
	for _, tc := range jsonValidCases {
		f.Add([]byte(tc.in))
	}
	f.Add(workload.AppendRow(nil, 123))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := codec.ValidJSON(data), json.Valid(data); got != want {
			t.Fatalf("ValidJSON(%q) = %v, encoding/json.Valid %v", data, got, want)
		}
	})
}

// Benchmarks of the row images of one W1 batch (about 125 bytes each):
// go test -run='^$' -bench=JSONW1 -benchmem -cpu=1 ./codec
func benchJSONW1(b *testing.B, valid func([]byte) bool) {
	batch := workload.Batch("s", 1)
	var rows [][]byte
	size := 0
	for i := range batch.Entries {
		for _, p := range [][]byte{batch.Entries[i].Before, batch.Entries[i].After} {
			if p != nil {
				rows = append(rows, p)
				size += len(p)
			}
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range rows {
			if !valid(r) {
				b.Fatal("invalid")
			}
		}
	}
}

func BenchmarkJSONW1ValidJSON(b *testing.B) { benchJSONW1(b, codec.ValidJSON) }
func BenchmarkJSONW1Stdlib(b *testing.B)    { benchJSONW1(b, json.Valid) }
