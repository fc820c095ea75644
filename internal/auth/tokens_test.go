package auth

import (
	"context"
	"strings"
	"testing"
)

func TestParseFileNamesTheField(t *testing.T) {
	h := Hash("s1")
	for _, tc := range []struct{ file, want string }{
		{"tokens:\n  - hash: " + h, "tokens[0].name"},
		{"tokens:\n  - name: a\n    hash: s1", "tokens[0] (\"a\").hash"},
		{"tokens:\n  - name: a\n    hash: sha256:abcd", "64 hex digits"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n  - name: a\n    hash: " + Hash("s2"), "duplicate name"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n  - name: b\n    hash: " + h, "same secret"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n    sources: ['[']", "bad pattern"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n    scopes: [root]", "unknown scope"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n    entries_per_sec: -1", "negative"},
		{"tokens:\n  - name: a\n    hash: " + h + "\n    secret: x", "field secret not found"},
	} {
		if _, err := ParseFile([]byte(tc.file)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestLookupAndScopes(t *testing.T) {
	json := `{"tokens": [
	  {"name": "east", "hash": "` + Hash("east-secret") + `", "sources": ["shard-east-*", "exact"], "scopes": ["flush"], "entries_per_sec": 500, "bytes_per_sec": 1e6},
	  {"name": "ops", "hash": "` + Hash("ops-secret") + `", "scopes": ["admin"]}
	]}`
	s, err := NewStatic([]byte(json))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("Bearer nope"); err == nil {
		t.Fatal("unknown secret accepted")
	}
	for _, bad := range []string{"", "east-secret", "Basic east-secret", "Bearer "} {
		if _, err := s.Authenticate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, err := s.Authenticate("bearer east-secret")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "east" || p.Admin || !p.Has(ScopeFlush) || p.Has(ScopeStatus) || p.EntriesPerSec != 500 || p.BytesPerSec != 1e6 {
		t.Fatalf("principal %+v", p)
	}
	for id, want := range map[string]bool{"shard-east-1": true, "exact": true, "shard-west-1": false, "shard-east-1/x": false, "exactly": false} {
		if p.AllowsSource(id) != want {
			t.Errorf("AllowsSource(%q) = %v", id, !want)
		}
	}
	ops, _ := s.Authenticate("Bearer ops-secret")
	if !ops.Admin || !ops.Has(ScopeFlush) || !ops.Has(ScopeStatus) || ops.AllowsSource("anything") {
		t.Fatalf("admin principal %+v", ops)
	}
	ctx := NewContext(context.Background(), p)
	if got, ok := FromContext(ctx); !ok || got.Name != "east" {
		t.Fatal("FromContext lost the principal")
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("FromContext of a bare context")
	}
}

func TestSecretsAreHashedNotStored(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if a == b || len(a) < 40 || strings.Contains(Hash(a), a) {
		t.Fatalf("secrets %q %q, hash %q", a, b, Hash(a))
	}
}
