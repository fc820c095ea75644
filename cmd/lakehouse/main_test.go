package main

import (
	"flag"
	"io"
	"testing"
)

func TestParseFlagsEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
		err  bool
	}{
		{name: "default", want: "./data"},
		{name: "environment", env: map[string]string{"LAKEHOUSE_DATA_DIR": "/srv/lake"}, want: "/srv/lake"},
		{name: "flag wins", env: map[string]string{"LAKEHOUSE_DATA_DIR": "/srv/lake"}, args: []string{"--data-dir", "/x"}, want: "/x"},
		{name: "bad value", env: map[string]string{"LAKEHOUSE_FLUSH_ENTRIES": "lots"}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			dir := fs.String("data-dir", "./data", "")
			fs.Int("flush-entries", 10000, "")
			err := parseFlags(fs, tc.args)
			if tc.err {
				if err == nil {
					t.Fatal("want an error for a bad environment value")
				}
				return
			}
			if err != nil || *dir != tc.want {
				t.Fatalf("data-dir = %q, %v; want %q", *dir, err, tc.want)
			}
		})
	}
}
