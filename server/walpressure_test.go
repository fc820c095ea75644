package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dot-do/lakehouse-rpc/server"
)

// TestFillingLogCommitsEarly: four sources send twice the write-ahead log's
// cap within one commit interval (an hour). Only a commit releases the
// log, so without early commits the log fills and batches are refused
// (buffer_full) until the interval ends. With them, nothing is refused, the
// log stays within its cap, commits come from log pressure (few: each waits
// for half the threshold to be staged), and every entry lands once with its
// persisted message.
func TestFillingLogCommitsEarly(t *testing.T) {
	const (
		walCap  = 256 << 10
		sources = 4
		batches = 64
		per     = 10 // about 2 KB per batch: 2 caps in all
		// pace leaves the flusher time to react, as staging real files
		// does (a burst can outrun it: the log's cap then refuses). At
		// 20 ms with a 128 KiB cap it had about 240 ms to react, which a
		// loaded 2-core machine under -race missed one run in three; now
		// it has over a second.
		pace = 50 * time.Millisecond
	)
	var reg *prometheus.Registry
	in, ss := startStaging(t, func(c *server.Config) {
		c.WALMaxBytes = walCap
		c.WALSegmentBytes = 8 << 10
		c.FlushInterval = time.Hour
		c.FlushEntries = 100
		c.FlushBytes = 16 << 10    // a small share of the log's cap, as by default
		c.WALCommitThreshold = 0.2 // room for the flusher to react, even under -race
		reg = prometheus.NewRegistry()
		c.Metrics = reg
	})
	streams, persisted := pumpAll(t, in, "early", sources, batches, per, pace)
	if nacks := testutilNacks(t, reg); nacks != 0 {
		t.Errorf("%v batches nacked", nacks)
	}
	_, commits, _, _ := ss.counts()
	if commits == 0 {
		t.Fatal("no commit although the log took twice its cap")
	}
	if commits > 2*walCap/(walCap/10) { // each commits half the threshold (a tenth of the cap) at least
		t.Errorf("%d commits for two caps of data: early commits should batch up what is staged", commits)
	}
	for _, c := range in.Server.RecentCommits() {
		if c.Trigger != "memory_pressure" {
			t.Errorf("commit %+v, want trigger memory_pressure", c)
		}
	}
	// What is left below the threshold waits for the interval: flush it.
	if res, err := in.Server.FlushNow(context.Background(), 0); err != nil || !res.Success {
		t.Fatal(res, err)
	}
	for i, ts := range streams {
		if err := awaitPersisted(ts, batches, &persisted[i], 30*time.Second); err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
	}
	want := make(map[string]int)
	for i := range sources {
		want[fmt.Sprintf("early-%d", i)] = batches * per
	}
	assertExactlyOnce(t, in, want)
}
