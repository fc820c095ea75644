package codec

import "math/bits"

// ValidJSON reports whether data is one valid JSON text (RFC 8259), with the
// same answer as encoding/json.Valid for every input:
//
//   - whitespace is space, tab, CR and LF only, around any token;
//   - inside strings any byte from 0x20 up is accepted, including invalid
//     UTF-8 (encoding/json.Valid does not check UTF-8 either; unpaired
//     surrogate escapes such as \ud800 are accepted too);
//   - containers may nest 10,000 deep (encoding/json's limit); one more
//     level is invalid.
//
// It allocates nothing and does not recurse, so hostile input cannot grow
// the stack. FuzzValidJSON checks the agreement with encoding/json.Valid.
func ValidJSON(data []byte) bool {
	// Row images rarely nest 64 deep: try with a one-word stack first, so
	// the common case does not clear the 1.2 KiB one.
	var small [1]uint64
	switch validJSON(data, small[:]) {
	case jsonValid:
		return true
	case jsonDeeper:
		return validJSONDeep(data)
	}
	return false
}

// validJSONDeep is ValidJSON with a stack for MaxJSONDepth levels.
//
//go:noinline
func validJSONDeep(data []byte) bool {
	var kinds [(MaxJSONDepth + 63) / 64]uint64
	return validJSON(data, kinds[:]) == jsonValid
}

// Results of validJSON.
const (
	jsonInvalid = iota
	jsonValid
	jsonDeeper // nests deeper than the stack it was given holds
)

// validJSON validates data with kinds as the stack of open containers, one
// bit per level: 1 for an object, 0 for an array.
func validJSON(data []byte, kinds []uint64) int {
	limit := min(len(kinds)*64, MaxJSONDepth)
	depth := 0
	n := len(data)
	i := 0

value:
	for i < n && isSpace[data[i]] {
		i++
	}
	if i >= n {
		return jsonInvalid
	}
	switch c := data[i]; c {
	case '{':
		if depth == limit {
			return tooDeep(limit)
		}
		kinds[depth>>6] |= 1 << (depth & 63)
		depth++
		i++
		for i < n && isSpace[data[i]] {
			i++
		}
		if i < n && data[i] == '}' {
			depth--
			i++
			goto after
		}
		goto key
	case '[':
		if depth == limit {
			return tooDeep(limit)
		}
		kinds[depth>>6] &^= 1 << (depth & 63)
		depth++
		i++
		for i < n && isSpace[data[i]] {
			i++
		}
		if i < n && data[i] == ']' {
			depth--
			i++
			goto after
		}
		goto value
	case '"':
		if i = scanString(data, i+1); i < 0 {
			return jsonInvalid
		}
		goto after
	case 't':
		if n-i < 4 || data[i+1] != 'r' || data[i+2] != 'u' || data[i+3] != 'e' {
			return jsonInvalid
		}
		i += 4
		goto after
	case 'f':
		if n-i < 5 || data[i+1] != 'a' || data[i+2] != 'l' || data[i+3] != 's' || data[i+4] != 'e' {
			return jsonInvalid
		}
		i += 5
		goto after
	case 'n':
		if n-i < 4 || data[i+1] != 'u' || data[i+2] != 'l' || data[i+3] != 'l' {
			return jsonInvalid
		}
		i += 4
		goto after
	default:
		if i = scanNumber(data, i); i < 0 {
			return jsonInvalid
		}
		goto after
	}

key:
	// At a member's name: whitespace before it is already skipped.
	if i >= n || data[i] != '"' {
		return jsonInvalid
	}
	if i = scanString(data, i+1); i < 0 {
		return jsonInvalid
	}
	for i < n && isSpace[data[i]] {
		i++
	}
	if i >= n || data[i] != ':' {
		return jsonInvalid
	}
	i++
	goto value

after:
	// After a complete value: a separator, a closing bracket or the end.
	for i < n && isSpace[data[i]] {
		i++
	}
	if depth == 0 {
		if i == n {
			return jsonValid
		}
		return jsonInvalid
	}
	if i >= n {
		return jsonInvalid
	}
	{
		inObject := kinds[(depth-1)>>6]&(1<<((depth-1)&63)) != 0
		switch data[i] {
		case ',':
			i++
			if inObject {
				for i < n && isSpace[data[i]] {
					i++
				}
				goto key
			}
			goto value
		case '}':
			if !inObject {
				return jsonInvalid
			}
		case ']':
			if inObject {
				return jsonInvalid
			}
		default:
			return jsonInvalid
		}
		depth--
		i++
		goto after
	}
}

// MaxJSONDepth is the deepest nesting of arrays and objects ValidJSON
// accepts: encoding/json's limit.
const MaxJSONDepth = 10000

// tooDeep is the result of validJSON at its stack's limit.
func tooDeep(limit int) int {
	if limit >= MaxJSONDepth {
		return jsonInvalid
	}
	return jsonDeeper
}

// scanString scans a string's contents from i, just after the opening quote,
// and returns the index after the closing quote, or -1 when the string is
// invalid or unterminated.
func scanString(data []byte, i int) int {
	n := len(data)
	for {
		if n-i >= 8 {
			// 8 bytes at a time: the lowest flagged byte is the first
			// one that needs attention.
			z := specialBytes(le.Uint64(data[i:]))
			if z == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(z) >> 3
		} else {
			for i < n && !strSpecial[data[i]] {
				i++
			}
			if i >= n {
				return -1
			}
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= n {
				return -1
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if n-i < 6 || !isHex[data[i+2]] || !isHex[data[i+3]] || !isHex[data[i+4]] || !isHex[data[i+5]] {
					return -1
				}
				i += 6
			default:
				return -1
			}
		default: // a control character
			return -1
		}
	}
}

// specialBytes flags the bytes of w (8 bytes, little-endian) that are a
// quote, a backslash or a control character (below 0x20): the high bit of
// each such byte is set in the result. A byte above a flagged one may be
// flagged falsely (a borrow), never one below, so the lowest flag is exact.
// Bytes from 0x80 up are never flagged on their own.
func specialBytes(w uint64) uint64 {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	// x has a zero byte where (x - ones) &^ x has that byte's high bit set.
	quote := w ^ (ones * '"')
	bslash := w ^ (ones * '\\')
	ctrl := w & (ones * 0xE0) // zero exactly for bytes below 0x20
	return (((quote - ones) &^ quote) | ((bslash - ones) &^ bslash) | ((ctrl - ones) &^ ctrl)) & highs
}

// scanNumber scans a number starting at i and returns the index after it,
// or -1 when there is none: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) int {
	n := len(data)
	if data[i] == '-' {
		i++
		if i >= n {
			return -1
		}
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < n && isDigit(data[i]) {
			i++
		}
	default:
		return -1
	}
	if i < n && data[i] == '.' {
		i++
		if i >= n || !isDigit(data[i]) {
			return -1
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n || !isDigit(data[i]) {
			return -1
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	return i
}

func isDigit(c byte) bool { return c-'0' <= 9 }

var isSpace, strSpecial, isHex [256]bool

func init() {
	for _, c := range " \t\r\n" {
		isSpace[c] = true
	}
	for c := 0; c < 0x20; c++ {
		strSpecial[c] = true
	}
	strSpecial['"'], strSpecial['\\'] = true, true
	for _, c := range "0123456789abcdefABCDEF" {
		isHex[c] = true
	}
}
