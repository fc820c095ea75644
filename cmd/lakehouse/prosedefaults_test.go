package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A default quoted in prose, after the flag's name: "`--max-snapshots` 200",
// "`--maintenance-interval` (1 min)", "`--compact-small-file-bytes` 64 KiB".
var proseDefault = regexp.MustCompile("`--([a-z0-9-]+)`\\s*\\(?([0-9][0-9,]*(?:\\.[0-9]+)?)(?:\\s*(KiB|MiB|GiB|h|min|s|ms)\\b)?")

// proseSettings are values the docs quote after a flag's name as a setting
// to use, not as its default.
var proseSettings = map[string]string{
	"flush-interval": "5 s",   // operations.md: "shorten `--flush-interval` (5 s works well"
	"wal-max-bytes":  "4 GiB", // the outage measurement's setting
}

// TestProseDefaults: where the README or a page of docs/ quotes a default
// of serve's after the flag's name, it is the flag's default.
// docs/configuration.md is generated from the flags (TestGeneratedConfigDocs);
// the prose is not, and drifted: docs/operations.md quoted --max-snapshots
// at 500 after its default became 200, with an alert at 450 that could
// then never fire.
func TestProseDefaults(t *testing.T) {
	fs, _ := serveFlagSet(io.Discard)
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, "../../README.md")
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range proseDefault.FindAllStringSubmatch(string(text), -1) {
			f := fs.Lookup(m[1])
			if f == nil {
				continue // another command's flag
			}
			if proseSettings[f.Name] == strings.TrimSpace(m[2]+" "+m[3]) {
				continue
			}
			if ok, known := proseMatches(f, m[2], m[3]); known {
				checked++
				if !ok {
					t.Errorf("%s: %q: the default of --%s is %s", filepath.Base(page), strings.Join(strings.Fields(m[0]), " "), f.Name, f.DefValue)
				}
			}
		}
	}
	t.Logf("%d defaults checked", checked)
	if checked < 10 {
		t.Errorf("only %d defaults quoted in the docs were checked: is the pattern still right?", checked)
	}
}

// proseMatches compares a quoted number and unit with f's default; known
// is false for flags of other kinds.
func proseMatches(f *flag.Flag, num, unit string) (ok, known bool) {
	v, err := strconv.ParseFloat(strings.ReplaceAll(num, ",", ""), 64)
	if err != nil {
		return false, false
	}
	if d, err := time.ParseDuration(f.DefValue); err == nil && strings.ContainsAny(f.DefValue, "hms") {
		per := map[string]time.Duration{"h": time.Hour, "min": time.Minute, "s": time.Second, "ms": time.Millisecond}[unit]
		return per != 0 && time.Duration(v*float64(per)) == d, true
	}
	def, err := strconv.ParseInt(f.DefValue, 10, 64)
	if err != nil {
		return false, false
	}
	mult := map[string]float64{"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
	if mult == 0 {
		return false, false
	}
	return v*mult == float64(def), true
}
