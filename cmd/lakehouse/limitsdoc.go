package main

import (
	"fmt"
	"io"
	"strings"
)

// limitsReference renders docs/limits.md: one table of every limit of
// lakehouse serve, from its flag (default, help) and limitDocs.
func limitsReference() string {
	fs, _ := serveFlagSet(io.Discard)
	var b strings.Builder
	b.WriteString(`# Limits

<!-- Generated from the limit flags of 'lakehouse serve' (cmd/lakehouse/limits.go).
     Do not edit: run LAKEHOUSE_UPDATE_DOCS=1 go test ./cmd/lakehouse -run TestGeneratedConfigDocs -->

Every limit of ` + "`lakehouse serve`" + ` is a flag, also settable as ` + "`LAKEHOUSE_<FLAG>`" + ` or in the YAML file (see
[configuration.md](configuration.md)). Each is defined once: the 16 MiB protocol maximum is ` + "`codec.MaxMessageSize`" + `,
and the gRPC message limit (twice the batch limit), the write-ahead log's record limit and the Go client's largest
batch are derived from it. A refusal never loses accepted data: a refused batch is not sequenced or stored, and a
client that resends it after the retry delay gets it accepted exactly once.

| flag | default | applies to | beyond it |
|---|---|---|---|
`)
	for _, d := range limitDocs {
		f := fs.Lookup(d.key)
		if f == nil {
			panic("limitDocs names an unknown flag: " + d.key)
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, f.DefValue, d.scope, d.beyond)
	}
	b.WriteString(`
Notes:

- Rate limits are per source id, for both paths (gRPC and the legacy WebSocket bridge, whose children are sources
  too). A batch refused with ` + "`rate_limited`" + ` has its share of the rate reserved for the time its ` + "`retry_delay_ms`" + `
  names, so batches refused together are told successive delays and each is accepted when it comes back. The Go
  client pauses the stream for the delay and resumes one batch at a time; legacy children resend after the delay
  (up to their 3 retries). Bursts: one second of the rate; a batch larger than that waits for its tokens
  (one ` + "`rate_limited`" + ` round trip).
- A token's own rate limit (` + "`entries_per_sec`" + `, ` + "`bytes_per_sec`" + ` in the token file, docs/security.md) replaces
  the ` + "`--source-rate-*`" + ` flags for each source written under that token; tokens without one get the flags' limit.
- ` + "`--max-streams-per-token`" + ` counts streams by the token's principal once tokens are configured; until then every
  stream counts only against ` + "`--max-streams`" + `. The WebSocket bridge opens one gRPC stream per active child, so keep
  ` + "`--max-streams`" + ` above the number of children expected to send at once.
- The HTTP write timeout is set per response, not on the server: WebSocket connections (hijacked) are exempt and
  bound each write themselves (10 s), and ` + "`/debug/pprof/profile?seconds=N`" + ` gets N seconds on top.
`)
	return b.String()
}
