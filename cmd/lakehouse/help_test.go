package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"runtime"
	"strings"
	"testing"

	"github.com/dot-do/lakehouse-rpc/internal/servertest"
)

// TestHelpGoesToStdout runs each command with -h: the help is on stdout (so
// it pipes into a pager), lists every flag with its LAKEHOUSE_* variable,
// and readers do not offer write-only flags.
func TestHelpGoesToStdout(t *testing.T) {
	for name, cmd := range commands() {
		if name == "version" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := cmd.run(t.Context(), []string{"-h"}, &out, &errb)
			if !errors.Is(err, flag.ErrHelp) || errb.Len() != 0 || !strings.HasPrefix(out.String(), "usage: lakehouse "+name) {
				t.Fatalf("%s -h: err %v, stdout %q, stderr %q", name, err, out.String(), errb.String())
			}
			if strings.Contains(out.String(), "--") && !strings.Contains(out.String(), "LAKEHOUSE_") {
				t.Errorf("%s -h lists no LAKEHOUSE_* names:\n%s", name, out.String())
			}
			if name == "scan" || name == "tables" {
				for _, f := range []string{"--sink", "--target-file-size"} {
					if strings.Contains(out.String(), f+" ") {
						t.Errorf("%s -h lists the write-only flag %s", name, f)
					}
				}
			}
		})
	}
	var out, errb bytes.Buffer
	commands()["serve"].run(t.Context(), []string{"-h"}, &out, &errb)
	for _, want := range []string{"LAKEHOUSE_DATA_DIR", "LAKEHOUSE_GRPC_ADDR", "LAKEHOUSE_CATALOG_URI"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve -h lacks %s", want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runVersion(t.Context(), nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "lakehouse ") || !strings.Contains(out.String(), runtime.Version()) {
		t.Fatalf("version printed %q", out.String())
	}
}

// TestStatusAndFlushPrintStableJSON checks that status and flush print JSON
// indented by two spaces with no stray whitespace, the same on every run.
func TestStatusAndFlushPrintStableJSON(t *testing.T) {
	in := servertest.Start(t)
	for _, run := range []func([]string, *bytes.Buffer, *bytes.Buffer) error{
		func(a []string, o, e *bytes.Buffer) error { return runStatus(t.Context(), a, o, e) },
		func(a []string, o, e *bytes.Buffer) error { return runFlush(t.Context(), a, o, e) },
	} {
		var out, errb bytes.Buffer
		if err := run([]string{"--addr", in.Addr}, &out, &errb); err != nil {
			t.Fatal(err)
		}
		var compact, canon bytes.Buffer
		if err := json.Compact(&compact, out.Bytes()); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out.String())
		}
		json.Indent(&canon, compact.Bytes(), "", "  ")
		if strings.TrimSpace(out.String()) != canon.String() || !strings.Contains(out.String(), "\n  \"") {
			t.Fatalf("output is not canonically indented:\n%q\nwant\n%q", out.String(), canon.String())
		}
	}
}
