// Package proflabel names the service's long-running tasks in CPU profiles
// (`lakehouse serve --pprof`), so that a profile splits the server's CPU
// between ingest, flush, commit and table maintenance. Goroutines inherit
// their creator's labels, so the Parquet writers that iceberg-go starts
// count toward the task that started them.
//
//	go tool pprof -tagfocus task=maintenance http://H/debug/pprof/profile
//	go tool pprof -tags http://H/debug/pprof/profile
package proflabel

import (
	"context"
	"runtime/pprof"
)

// Key is the profile label; its values are the Task constants.
const Key = "task"

// Tasks.
const (
	Ingest      = "ingest"      // gRPC stream handlers: decode, validate, log
	Flush       = "flush"       // the flusher: build flushes, stage, commit
	Commit      = "commit"      // the elected committer (coordinated mode)
	Maintenance = "maintenance" // compaction (changelog and mirror), snapshot expiry, orphan cleanup
)

// Set labels the calling goroutine, and the goroutines it starts from now
// on, with task. For goroutines the service owns from start to end.
func Set(ctx context.Context, task string) {
	pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels(Key, task)))
}

// Do runs f with the calling goroutine labelled task, and restores its
// labels after (for goroutines lent by a library, such as gRPC's).
func Do(ctx context.Context, task string, f func(context.Context)) {
	pprof.Do(ctx, pprof.Labels(Key, task), f)
}
