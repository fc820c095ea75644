package workload

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"time"
)

// maxNewFields bounds the fields a keyed table gains over a run, so that a
// long run does not grow a table's schema without bound.
const maxNewFields = 6

// keyedTimeLayout is ISO-8601 with milliseconds, as JavaScript's toISOString.
const keyedTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Value pools; names hold characters JSON must escape, and non-ASCII text.
var (
	keyedNames = []string{"Ada Lovelace", "Zoë Saldaña", "Seán O'Brien", `Dwayne "The Rock" Johnson`, "Back\\slash Bob",
		"山田 太郎", "Ωmega", "Tab\tby", "Émile Zola", "Grace Hopper", "Linus", "Ng"}
	keyedCities = []string{"Berlin", "São Paulo", "Zürich", "New York", "Kraków", "Reykjavík", "東京", "Lagos"}
	keyedTags   = []string{"vip", "new", "churn-risk", "beta", "eu", "us", "apac", "wholesale"}
)

// rowGen builds the JSON rows of the keyed workload.
type rowGen struct {
	typeChanges bool
	names       [][]byte // JSON-quoted
	cities      [][]byte
	tags        [][]byte
	buf         []byte
}

func newRowGen(typeChanges bool) rowGen {
	quote := func(ss []string) [][]byte {
		out := make([][]byte, len(ss))
		for i, s := range ss {
			out[i], _ = json.Marshal(s) // cannot fail for a string
		}
		return out
	}
	return rowGen{typeChanges: typeChanges, names: quote(keyedNames), cities: quote(keyedCities), tags: quote(keyedTags)}
}

// Field names a type change may hit, with the value of the other kind.
var keyedTypeChanges = [...]struct{ field, value string }{
	{"age", `"unknown"`}, {"active", `"yes"`}, {"score", `"n/a"`}, {"name", `12345`},
	{"address", `"somewhere"`}, {"tags", `"vip,eu"`}, {"updated_at", `1700000000000`}, {"edits", `true`},
}

// row returns the after JSON of key id at its edit-th change, at event time
// evMs, with the table's newFields extra fields (each present or absent).
// Floats always have a fraction, so they never read as integers.
func (r *rowGen) row(rng *rand.Rand, id int64, edit int32, evMs int64, newFields int) []byte {
	changed := -1
	if r.typeChanges && rng.Float64() < DefaultKeyedTypeChangeRate {
		changed = rng.IntN(len(keyedTypeChanges))
	}
	b := r.buf[:0]
	field := func(name string) bool {
		if changed >= 0 && keyedTypeChanges[changed].field == name {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = append(b, keyedTypeChanges[changed].value...)
			return false
		}
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		return true
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, id, 10)
	if field("name") {
		b = append(b, r.names[rng.IntN(len(r.names))]...)
	}
	b = append(b, `,"email":"user`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `@example.com"`...)
	if field("age") {
		b = strconv.AppendInt(b, 18+rng.Int64N(70), 10)
	}
	if field("score") {
		b = appendFraction(b, rng, 1000)
	}
	if field("active") {
		b = strconv.AppendBool(b, rng.IntN(2) == 0)
	}
	if field("updated_at") {
		b = append(b, '"')
		b = time.UnixMilli(evMs).UTC().AppendFormat(b, keyedTimeLayout)
		b = append(b, '"')
	}
	if field("address") {
		b = append(b, `{"city":`...)
		b = append(b, r.cities[rng.IntN(len(r.cities))]...)
		b = append(b, `,"zip":"`...)
		b = strconv.AppendInt(b, 10000+rng.Int64N(90000), 10)
		b = append(b, `","geo":{"lat":`...)
		b = appendFraction(b, rng, 90)
		b = append(b, `,"lon":`...)
		b = appendFraction(b, rng, 180)
		b = append(b, `}}`...)
	}
	if field("tags") {
		b = append(b, '[')
		for i := range 1 + rng.IntN(3) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, r.tags[rng.IntN(len(r.tags))]...)
		}
		b = append(b, ']')
	}
	if field("edits") {
		b = strconv.AppendInt(b, int64(edit), 10)
	}
	for n := range newFields {
		if rng.IntN(10) < 3 {
			continue // absent in this row
		}
		b = append(b, `,"extra_`...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, `":`...)
		switch n % 4 {
		case 0:
			b = append(b, `"x`...)
			b = strconv.AppendInt(b, rng.Int64N(1000), 10)
			b = append(b, '"')
		case 1:
			b = strconv.AppendInt(b, rng.Int64N(1<<40), 10)
		case 2:
			b = appendFraction(b, rng, 1e6)
		case 3:
			b = strconv.AppendBool(b, rng.IntN(2) == 0)
		}
	}
	b = append(b, '}')
	r.buf = b
	return append([]byte(nil), b...) // the entry keeps its own copy
}

// appendFraction appends a number in (-limit, limit) with one to three
// decimals, the last one not zero: never integral, and printed as Go and
// JavaScript print it.
func appendFraction(b []byte, rng *rand.Rand, limit int64) []byte {
	if rng.IntN(4) == 0 {
		b = append(b, '-')
	}
	b = strconv.AppendInt(b, rng.Int64N(limit), 10)
	b = append(b, '.')
	digits := 1 + rng.IntN(3)
	pow := int64(10)
	for range digits - 1 {
		pow *= 10
	}
	frac := 1 + rng.Int64N(pow-1)
	if frac%10 == 0 {
		frac++
	}
	for p := pow / 10; p > frac; p /= 10 {
		b = append(b, '0') // zero padding: 0.05
	}
	return strconv.AppendInt(b, frac, 10)
}
