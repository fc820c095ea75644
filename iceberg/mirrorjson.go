package iceberg

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// afterDecoder decodes `after` JSON objects into the values encoding/json
// makes with UseNumber (map[string]any, []any, json.Number, string, bool,
// nil), through jsontext's tokenizer: no reflection, and one decoder reused
// for every row of a commit (BenchmarkMirrorRows). parseAfterStd is the
// reference; TestAfterDecoderMatchesStd and FuzzAfterDecoder hold the two
// equal. Not safe for concurrent use.
//
// Rows of a table repeat their member names: the decoder interns them (up
// to maxInternedNames), so a name costs no allocation after its first row,
// and sizes each top-level map for the previous row's member count.
type afterDecoder struct {
	rd      strings.Reader
	src     string // the text being decoded
	dec     *jsontext.Decoder
	names   map[string]string
	scratch []byte
	topLen  int // members of the last top-level object
}

// maxInternedNames bounds an afterDecoder's interned member names (rows
// with ever-new names, such as maps keyed by ids, allocate them as usual).
const maxInternedNames = 4096

func newAfterDecoder() *afterDecoder {
	d := &afterDecoder{names: make(map[string]string)}
	d.dec = jsontext.NewDecoder(&d.rd, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	return d
}

// parse decodes an `after` JSON object; ok is false when the text is not
// one. Its strings and numbers are slices of b.
func (d *afterDecoder) parse(b string) (map[string]any, bool) {
	if len(b) == 0 {
		return nil, true
	}
	if !utf8.ValidString(b) {
		// encoding/json's replacement of invalid bytes is the reference.
		return parseAfterStd([]byte(b))
	}
	d.src = b
	d.rd.Reset(b)
	d.dec.Reset(&d.rd, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if d.dec.PeekKind() != '{' {
		return nil, false
	}
	v, err := d.value(0)
	if errors.Is(err, errDecodeFallback) {
		return parseAfterStd([]byte(b))
	}
	if err != nil {
		return nil, false
	}
	// As encoding/json's Decoder.More: text after the object other than
	// a closing bracket means it is not one object.
	rest := strings.TrimLeft(b[d.dec.InputOffset():], " \t\r\n")
	if len(rest) > 0 && rest[0] != '}' && rest[0] != ']' {
		return nil, false
	}
	return v.(map[string]any), true
}

func (d *afterDecoder) value(depth int) (any, error) {
	switch d.dec.PeekKind() {
	case '"':
		return d.readString()
	case '0':
		raw, err := d.dec.ReadValue()
		if err != nil {
			return nil, err
		}
		end := int(d.dec.InputOffset())
		return json.Number(d.src[end-len(raw) : end]), nil
	}
	tok, err := d.dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case 'n':
		return nil, nil
	case 't', 'f':
		return tok.Bool(), nil
	case '"':
		return tok.String(), nil
	case '0':
		return json.Number(tok.String()), nil
	case '{':
		var m map[string]any
		if depth == 0 {
			m = make(map[string]any, d.topLen)
		} else {
			m = make(map[string]any)
		}
		for d.dec.PeekKind() != '}' {
			key, err := d.name()
			if err != nil {
				return nil, err
			}
			if m[key], err = d.value(depth + 1); err != nil {
				return nil, err
			}
		}
		if depth == 0 {
			d.topLen = len(m)
		}
		_, err := d.dec.ReadToken()
		return m, err
	case '[':
		a := []any{}
		for d.dec.PeekKind() != ']' {
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.dec.ReadToken()
		return a, err
	}
	return nil, errUnexpectedToken
}

// readString reads a string value: a slice of the text unless it has escapes.
func (d *afterDecoder) readString() (any, error) {
	raw, err := d.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		end := int(d.dec.InputOffset())
		return d.src[end-len(raw)+1 : end-1], nil
	}
	if d.scratch, err = jsontext.AppendUnquote(d.scratch[:0], raw); err != nil {
		return nil, errDecodeFallback
	}
	return string(d.scratch), nil
}

// name reads an object member's name, interned.
func (d *afterDecoder) name() (string, error) {
	raw, err := d.dec.ReadValue()
	if err != nil {
		return "", err
	}
	if len(raw) < 2 || raw[0] != '"' {
		return "", errUnexpectedToken
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') >= 0 {
		if d.scratch, err = jsontext.AppendUnquote(d.scratch[:0], raw); err != nil {
			// An escape encoding/json replaces (a lone surrogate):
			// it is the reference.
			return "", errDecodeFallback
		}
		body = d.scratch
	}
	if s, ok := d.names[string(body)]; ok {
		return s, nil
	}
	s := string(body)
	if len(d.names) < maxInternedNames {
		d.names[s] = s
	}
	return s, nil
}

var (
	errUnexpectedToken = errors.New("unexpected JSON token")
	errDecodeFallback  = errors.New("decode with encoding/json")
)

// parseAfterStd decodes an `after` JSON object with encoding/json; ok is
// false when the text is not a JSON object.
func parseAfterStd(b []byte) (map[string]any, bool) {
	if len(b) == 0 {
		return nil, true
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil || dec.More() {
		return nil, false
	}
	return m, true
}
