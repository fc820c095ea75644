package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// The configuration reference (docs/configuration.md) and the example file
// (lakehouse.example.yaml) are generated from serve's flag definitions; a
// test fails when the committed files differ (regenerate with
// LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs).

// exampleConfig renders lakehouse.example.yaml: every flag of serve with its
// default and its help text.
func exampleConfig() string {
	fs, _ := serveFlagSet(io.Discard)
	var b strings.Builder
	b.WriteString(`# Example configuration of 'lakehouse serve': lakehouse serve --config lakehouse.yaml
#
# Generated from the flag definitions (see docs/configuration.md); every key is
# shown with its default. Keys are the flags of 'lakehouse serve -h' without
# their dashes; an unknown key is an error naming it and its line.
# Precedence: command-line flags > LAKEHOUSE_* environment variables > this
# file > defaults. Durations take Go syntax (30s, 1m30s, 2h), sizes are bytes.
# catalog-props may also be a mapping:
#   catalog-props:
#     s3.endpoint: http://127.0.0.1:9000
#     s3.region: us-east-1
`)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		b.WriteString("\n")
		for _, line := range wrap(f.Usage, 78) {
			b.WriteString("# " + line + "\n")
		}
		b.WriteString(f.Name + ": " + yamlScalar(f.DefValue) + "\n")
	})
	return b.String()
}

// configReference renders docs/configuration.md.
func configReference() string {
	fs, _ := serveFlagSet(io.Discard)
	var b strings.Builder
	b.WriteString(`# Configuration reference

<!-- Generated from the flag definitions of 'lakehouse serve' (cmd/lakehouse/serve.go and the flags it shares).
     Do not edit: run LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs -->

Every setting of ` + "`lakehouse serve`" + ` can be given three ways besides its default:

| precedence | how | example |
|---|---|---|
| 1 (wins) | command-line flag | ` + "`--flush-interval 5s`" + ` |
| 2 | environment variable ` + "`LAKEHOUSE_<FLAG>`" + ` (upper case, ` + "`-`" + ` becomes ` + "`_`" + `) | ` + "`LAKEHOUSE_FLUSH_INTERVAL=5s`" + ` |
| 3 | YAML file given by ` + "`--config FILE`" + ` (or ` + "`LAKEHOUSE_CONFIG=FILE`" + `), keys are the flag names | ` + "`flush-interval: 5s`" + ` |
| 4 | the default below | |

The file is a flat mapping; an unknown key, a repeated key or a bad value is an error that names the key and its
line (` + "`lakehouse.yaml:7: unknown key \"flush-intervall\"`" + `). ` + "`catalog-props`" + ` may be a mapping of
properties instead of ` + "`k=v,k=v`" + `. A documented example with every key at its default is
[` + "`lakehouse.example.yaml`" + `](../lakehouse.example.yaml). Durations use Go syntax (` + "`30s`, `1m30s`, `2h`" + `); sizes
are bytes. The other commands (` + "`bridge`, `bench`, `scan`, ..." + `) take flags and environment variables; ` + "`lakehouse <command> -h`" + ` lists them.

| flag | environment | default | meaning |
|---|---|---|---|
`)
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | `%s` | %s |\n", f.Name, envName(f.Name), def, strings.ReplaceAll(f.Usage, "|", `\|`))
	})
	return b.String()
}

// yamlScalar writes s as it reads back as the same text: plain when it can
// be (30s, false, ./data), quoted otherwise ("").
func yamlScalar(s string) string {
	var n yaml.Node
	if s != "" && yaml.Unmarshal([]byte(s), &n) == nil && len(n.Content) == 1 &&
		n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Value == s && n.Content[0].Tag != "!!null" {
		return s
	}
	out, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Sprintf("%q", s)
	}
	return strings.TrimSuffix(string(out), "\n")
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
