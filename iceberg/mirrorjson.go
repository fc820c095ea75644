package iceberg

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// afterDecoder decodes `after` JSON objects into the values encoding/json
// makes with UseNumber (map[string]any, []any, json.Number, string, bool,
// nil), through jsontext's tokenizer: no reflection, and one decoder reused
// for every row of a commit (BenchmarkMirrorRows). parseAfterStd is the
// reference; TestAfterDecoderMatchesStd and FuzzAfterDecoder hold the two
// equal. Not safe for concurrent use.
type afterDecoder struct {
	rd  bytes.Reader
	dec *jsontext.Decoder
}

func newAfterDecoder() *afterDecoder {
	d := &afterDecoder{}
	d.dec = jsontext.NewDecoder(&d.rd, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	return d
}

// parse is parseAfter.
func (d *afterDecoder) parse(b []byte) (map[string]any, bool) {
	if len(b) == 0 {
		return nil, true
	}
	if !utf8.Valid(b) {
		// encoding/json's replacement of invalid bytes is the reference.
		return parseAfterStd(b)
	}
	d.rd.Reset(b)
	d.dec.Reset(&d.rd, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if d.dec.PeekKind() != '{' {
		return nil, false
	}
	v, err := d.value()
	if err != nil {
		return nil, false
	}
	// As encoding/json's Decoder.More: text after the object other than
	// a closing bracket means it is not one object.
	rest := bytes.TrimLeft(b[d.dec.InputOffset():], " \t\r\n")
	if len(rest) > 0 && rest[0] != '}' && rest[0] != ']' {
		return nil, false
	}
	return v.(map[string]any), true
}

func (d *afterDecoder) value() (any, error) {
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
		m := make(map[string]any)
		for d.dec.PeekKind() != '}' {
			k, err := d.dec.ReadToken()
			if err != nil {
				return nil, err
			}
			key := k.String()
			if m[key], err = d.value(); err != nil {
				return nil, err
			}
		}
		_, err := d.dec.ReadToken()
		return m, err
	case '[':
		a := []any{}
		for d.dec.PeekKind() != ']' {
			v, err := d.value()
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

var errUnexpectedToken = errors.New("unexpected JSON token")

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
