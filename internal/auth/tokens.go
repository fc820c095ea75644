package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// HashPrefix starts every stored token hash.
const HashPrefix = "sha256:"

// secretPrefix marks generated secrets, so that they are easy to recognise
// (and to scan for in leaked logs).
const secretPrefix = "lht_"

// File is the token file (YAML; JSON is YAML too).
type File struct {
	Tokens []Entry `yaml:"tokens"`
}

// Entry is one token of the file.
type Entry struct {
	Name          string   `yaml:"name"`
	Hash          string   `yaml:"hash"`
	Sources       []string `yaml:"sources,omitempty"`
	Scopes        []string `yaml:"scopes,omitempty"`
	EntriesPerSec float64  `yaml:"entries_per_sec,omitempty"`
	BytesPerSec   float64  `yaml:"bytes_per_sec,omitempty"`
}

// table is a parsed, validated token file.
type table struct {
	principals []Principal
}

// ParseFile parses and validates a token file; errors name the entry and the
// field.
func ParseFile(data []byte) (*table, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	t := &table{}
	names := map[string]bool{}
	hashes := map[[32]byte]bool{}
	for i, e := range f.Tokens {
		field := func(name string) string { return fmt.Sprintf("tokens[%d] (%q).%s", i, e.Name, name) }
		if e.Name == "" {
			return nil, fmt.Errorf("tokens[%d].name: required", i)
		}
		if names[e.Name] {
			return nil, fmt.Errorf("%s: duplicate name", field("name"))
		}
		names[e.Name] = true
		h, err := parseHash(e.Hash)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field("hash"), err)
		}
		if hashes[h] {
			return nil, fmt.Errorf("%s: the same secret as an earlier token", field("hash"))
		}
		hashes[h] = true
		for _, p := range e.Sources {
			if _, err := path.Match(p, ""); p == "" || err != nil {
				return nil, fmt.Errorf("%s: bad pattern %q", field("sources"), p)
			}
		}
		p := Principal{Name: e.Name, Sources: e.Sources, Scopes: e.Scopes, EntriesPerSec: e.EntriesPerSec, BytesPerSec: e.BytesPerSec, hash: h}
		for _, s := range e.Scopes {
			switch s {
			case ScopeFlush, ScopeStatus:
			case ScopeAdmin:
				p.Admin = true
			default:
				return nil, fmt.Errorf("%s: unknown scope %q (flush, status, admin)", field("scopes"), s)
			}
		}
		if e.EntriesPerSec < 0 || e.BytesPerSec < 0 {
			return nil, fmt.Errorf("%s: rates cannot be negative", field("entries_per_sec/bytes_per_sec"))
		}
		t.principals = append(t.principals, p)
	}
	return t, nil
}

func parseHash(s string) ([32]byte, error) {
	var h [32]byte
	hexPart, ok := strings.CutPrefix(s, HashPrefix)
	if !ok {
		return h, fmt.Errorf("want %s<64 hex digits> (run 'lakehouse token new'), not the secret itself", HashPrefix)
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("want %s followed by 64 hex digits", HashPrefix)
	}
	copy(h[:], b)
	return h, nil
}

// lookup finds the principal of a secret. Every entry is compared, in
// constant time, so the time taken says nothing about which hash is close.
func (t *table) lookup(secret string) (Principal, bool) {
	h := sha256.Sum256([]byte(secret))
	found := -1
	for i := range t.principals {
		if subtle.ConstantTimeCompare(h[:], t.principals[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, false
	}
	return t.principals[found], true
}

// byHash finds a principal again after a reload.
func (t *table) byHash(h [32]byte) (Principal, bool) {
	for _, p := range t.principals {
		if p.hash == h {
			return p, true
		}
	}
	return Principal{}, false
}

// Hash returns the stored form of a secret: sha256:<hex>.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return HashPrefix + hex.EncodeToString(h[:])
}

// NewSecret returns a random secret (256 bits).
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// errNoBearer is returned for a missing or malformed authorization value.
var errNoBearer = errors.New("missing bearer token: send 'authorization: Bearer <token>'")

// bearer extracts the secret of an "authorization" value.
func bearer(v string) (string, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errNoBearer
	}
	return strings.TrimSpace(tok), nil
}
