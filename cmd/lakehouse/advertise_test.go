package main

import "testing"

// A wildcard listen address is not advertised: a redirect to it would send
// clients to their own host.
func TestAdvertisable(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9090":   "127.0.0.1:9090",
		"lakehouse-0:9090": "lakehouse-0:9090",
		"[::1]:9090":       "[::1]:9090",
		":9090":            "",
		"0.0.0.0:9090":     "",
		"[::]:9090":        "",
		"not an address":   "",
	} {
		if got := advertisable(in); got != want {
			t.Errorf("advertisable(%q) = %q, want %q", in, got, want)
		}
	}
}
