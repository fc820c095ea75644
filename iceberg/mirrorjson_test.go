package iceberg

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

var afterCorpus = []string{
	``, ` `, `{}`, `null`, `[]`, `1`, `"x"`, `{"a":1}`, ` {"a":1} `, `{"a":1}}`, `{"a":1}]`, `{"a":1} x`, `{"a":1}{}`,
	`{"a":1,"a":"dup"}`, `{"a":{"b":[1,2.5,-3e2,"s",true,false,null,{"c":{}}]}}`, `{"a":01}`, `{"a":1.}`, `{"a":-0}`,
	`{"a":"\u00e9\n\"\\\/\ud83d\ude00"}`, `{"a":"\ud800"}`, `{"a":"é"}`, "{\"a\":\"\xff\"}", "{\"\xfe\":1}", `{"a"}`, `{"a":}`,
	`{"a":1,}`, `{"a":[1,]}`, `{'a':1}`, `{"a":tru}`, `{"a":1e400}`, `{"a":123456789012345678901234567890}`,
	"{\"a\":\"\t\"}", `{"a":"x"` + strings.Repeat(" ", 10), `{"":null}`, `{"a":[[[[[]]]]]}`,
	`{"a\u00e9":1,"aé":2}`, `{"\ud800":1}`, `{"\"q\"":{"\n":[{"\u0041":1}]}}`, `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10}`,
}

// TestAfterDecoderMatchesStd: the jsontext-based decoder gives what
// encoding/json gives (the reference), on a corpus of edge cases and on
// random JSON, with one decoder reused throughout.
func TestAfterDecoderMatchesStd(t *testing.T) {
	d := newAfterDecoder()
	check := func(in string) {
		t.Helper()
		gotM, gotOK := d.parse(in)
		wantM, wantOK := parseAfterStd([]byte(in))
		if gotOK != wantOK || !reflect.DeepEqual(gotM, wantM) {
			t.Errorf("%q: got %v %#v, encoding/json %v %#v", in, gotOK, gotM, wantOK, wantM)
		}
	}
	for _, in := range afterCorpus {
		check(in)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		check(randomJSON(rng, 0, true))
	}
}

// randomJSON makes a random JSON value (an object at the top), now and then
// broken.
func randomJSON(rng *rand.Rand, depth int, top bool) string {
	kind := rng.IntN(8)
	if top || depth < 2 && kind >= 6 {
		var b strings.Builder
		b.WriteByte('{')
		for i := range rng.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%s", []string{"a", "b", "é", "a.b", "_op", ""}[rng.IntN(6)], randomJSON(rng, depth+1, false))
		}
		b.WriteByte('}')
		s := b.String()
		if top && rng.IntN(20) == 0 {
			s = s[:rng.IntN(len(s))] // broken
		}
		return s
	}
	switch kind {
	case 0:
		return []string{"null", "true", "false"}[rng.IntN(3)]
	case 1:
		return fmt.Sprint(rng.Int64N(1<<62) - 1<<61)
	case 2:
		return fmt.Sprintf("%g", rng.NormFloat64()*1e6)
	case 3, 4:
		return fmt.Sprintf("%q", []string{"x", "2024-05-01T12:00:00Z", "a\"b\\c", "ü\u2028", ""}[rng.IntN(5)])
	default:
		var parts []string
		for range rng.IntN(4) {
			parts = append(parts, randomJSON(rng, depth+1, false))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
}

func FuzzAfterDecoder(f *testing.F) {
	for _, in := range afterCorpus {
		f.Add([]byte(in))
	}
	d := newAfterDecoder()
	f.Fuzz(func(t *testing.T, in []byte) {
		gotM, gotOK := d.parse(string(in))
		wantM, wantOK := parseAfterStd(in)
		if gotOK != wantOK || !reflect.DeepEqual(gotM, wantM) {
			t.Errorf("%q: got %v %#v, encoding/json %v %#v", in, gotOK, gotM, wantOK, wantM)
		}
	})
}
