package iceberg

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dot-do/lakehouse-rpc/internal/workload"
	"github.com/dot-do/lakehouse-rpc/sink"
)

// TestCommitCostWithAge (LAKEHOUSE_COMMIT_AGE=<sources>) measures how a
// table's commit time grows with its snapshots when every commit carries
// rows of that many sources: 200 commits of one row per source, no
// maintenance (so no snapshot is expired: --max-snapshots is 200), or with
// LAKEHOUSE_COMMIT_AGE_EXPIRE=1 snapshot expiry with its defaults every 25
// commits. It logs the mean commit time of each 50 commits and the metadata
// file's size.
// Each snapshot's summary records the watermarks of the sources of its
// commit (DESIGN.md), so the metadata grows with snapshots times sources,
// and a commit parses it twice (the sink's load, the SQL catalog's own)
// and writes it once. A measurement, not a check of speed.
func TestCommitCostWithAge(t *testing.T) {
	sources, _ := strconv.Atoi(os.Getenv("LAKEHOUSE_COMMIT_AGE"))
	if sources <= 0 {
		t.Skip("a measurement: set LAKEHOUSE_COMMIT_AGE=<sources per commit>, for example 8 or 1000")
	}
	expire := os.Getenv("LAKEHOUSE_COMMIT_AGE_EXPIRE") == "1"
	s := openTestSink(t, t.TempDir(), func(c *Config) {
		c.Maintenance.Interval = 0
		c.Maintenance.CompactDisabled = true
		c.Mirror = false
	})
	var spent time.Duration
	for i := 1; i <= 200; i++ {
		f := manySourcesFlush(uint64(i), sources)
		start := time.Now()
		mustCommit(t, s, f)
		spent += time.Since(start)
		if expire && i%25 == 0 {
			maintain(t, s, MaintainOptions{})
		}
		if i%50 == 0 {
			tbl, err := s.LoadTable(context.Background(), "users")
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(strings.TrimPrefix(tbl.MetadataLocation(), "file://"))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d sources, commits %d-%d: %v per commit; metadata %d KB", sources, i-49, i, (spent / 50).Round(time.Millisecond), st.Size()>>10)
			spent = 0
		}
	}
}

// manySourcesFlush is flush id: one users row from each of sources
// sources, their batch id.
func manySourcesFlush(id uint64, sources int) *sink.Flush {
	f := &sink.Flush{ID: id, Reason: "test", Time: time.Now(), Watermarks: make(map[string]sink.Watermark)}
	entry := workload.Entries(0, 1)[0]
	entry.Table = []byte("users")
	entry.Sequence = id
	tb := sink.Table{Name: "users"}
	for k := range sources {
		src := fmt.Sprintf("shard-%04d", k)
		tb.Rows = append(tb.Rows, sink.Row{SourceID: src, BatchSeq: id, Entry: entry})
		f.Watermarks[src] = sink.Watermark{BatchSeq: id, EntrySeq: id}
	}
	f.Tables = []sink.Table{tb}
	return f
}
