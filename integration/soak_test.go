//go:build linux

package integration

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	iceberggo "github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/dot-do/lakehouse-rpc/iceberg"
	"github.com/dot-do/lakehouse-rpc/internal/bench"
)

// soakMinFree stops the soak when the temp file system runs low: without
// snapshot expiry, table metadata grows quadratically with the commits.
const soakMinFree = 5 << 30

// TestSoakTableHealth is the soak benchmark of table health (issue 9): it runs
// `lakehouse serve` (--flush-interval 1s, plus LAKEHOUSE_SOAK_SERVE_ARGS) and
// `lakehouse bench --sources 8` for LAKEHOUSE_SOAK; every LAKEHOUSE_SOAK_WINDOW
// (default 5m) it reports commit times, snapshots, files, manifests, metadata
// size and ingest rate; then it checks the exact read-back. LAKEHOUSE_SOAK_BIN
// picks a prebuilt binary, LAKEHOUSE_SOAK_REPORT a file for the report.
func TestSoakTableHealth(t *testing.T) {
	total := soakEnvDuration(t, "LAKEHOUSE_SOAK", 0)
	if total <= 0 {
		t.Skip("set LAKEHOUSE_SOAK to a duration (e.g. 30m) to run the soak benchmark")
	}
	window := soakEnvDuration(t, "LAKEHOUSE_SOAK_WINDOW", 5*time.Minute)
	if bin := os.Getenv("LAKEHOUSE_SOAK_BIN"); bin != "" {
		abs, _ := filepath.Abs(bin)
		lakehouseBuild.once.Do(func() { lakehouseBuild.path = abs })
		if got := lakehouseBin(t); got != abs {
			t.Fatalf("this test run already built %s; run TestSoakTableHealth alone to use LAKEHOUSE_SOAK_BIN", got)
		}
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	args := append([]string{"serve", "--data-dir", dataDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--flush-interval", "1s", "--log-level", "warn"}, strings.Fields(os.Getenv("LAKEHOUSE_SOAK_SERVE_ARGS"))...)
	srvLog, benchLog := filepath.Join(dir, "server.log"), filepath.Join(dir, "bench.log")
	srv := startProc(t, grpcAddr, srvLog, args...)
	loadStart := soakLoadAvg()
	prev := scrapeMetrics(t, httpAddr)
	start := time.Now()
	bp := startProc(t, "", benchLog, "bench", "--addr", grpcAddr, "--sources", "8",
		"--duration", total.String(), "--json", "--progress", "30s")

	var (
		wins    [][]string
		cache   = map[string][]string{} // manifest path -> partition keys of its live data files
		last    = start
		next    = start.Add(window)
		timer   = time.NewTimer(window)
		diskTkr = time.NewTicker(15 * time.Second)
		retries int
	)
	defer diskTkr.Stop()
	for done := false; !done; {
		select {
		case <-bp.done:
			done = true
		case <-diskTkr.C:
			var st syscall.Statfs_t
			if syscall.Statfs(dir, &st) == nil && st.Bavail*uint64(st.Bsize) < soakMinFree {
				t.Fatalf("soak stopped after %v: less than %d GiB free under %s", time.Since(start).Round(time.Second), soakMinFree>>30, dir)
			}
			continue
		case <-timer.C:
		}
		now := time.Now()
		if done && now.Sub(last) < window/4 {
			break // a short tail after the bench's drain: not a window
		}
		cur := scrapeMetrics(t, httpAddr)
		h, err := readHealth(dataDir, cache)
		for attempt := 1; err != nil; attempt++ { // the server commits meanwhile: retry a busy catalog
			t.Logf("reading table state (attempt %d): %v", attempt, err)
			if attempt == 10 {
				t.FailNow()
			}
			retries++
			time.Sleep(2 * time.Second)
			h, err = readHealth(dataDir, cache)
		}
		r := soakRow(last.Sub(start), now.Sub(start), now.Sub(last), prev, cur, h)
		t.Logf("window %s", strings.Join(r, " | "))
		wins = append(wins, r)
		prev, last, next = cur, now, next.Add(window)
		timer.Reset(time.Until(next))
	}
	if bp.err != nil {
		t.Fatalf("lakehouse bench: %v\n%s", bp.err, readLog(t, benchLog))
	}
	var sum bench.Summary // `lakehouse bench --json` prints it last (progress lines share the log)
	lines := strings.Split(strings.TrimSpace(readLog(t, benchLog)), "\n")
	if json.Unmarshal([]byte(lines[len(lines)-1]), &sum) != nil {
		t.Fatalf("no JSON summary at the end of the bench output:\n%s", readLog(t, benchLog))
	}
	t.Logf("bench: %v", &sum)
	flushOut, err := exec.Command(lakehouseBin(t), "flush", "--addr", grpcAddr).CombinedOutput()
	if err != nil {
		t.Errorf("lakehouse flush: %v\n%s", err, flushOut)
	}
	if err := srv.stop(5 * time.Minute); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, readLog(t, srvLog))
	}
	loadEnd := soakLoadAvg()
	rows, dups, gaps := soakReadBack(t, dataDir)
	exact := rows == int64(sum.Entries) && dups == 0 && len(gaps) == 0

	var b strings.Builder
	metric, les := commitMetric(prev)
	fmt.Fprintf(&b, "## Soak: table health over %v, windows of %v\n\n", total, window)
	fmt.Fprintf(&b, "- binary %s; `lakehouse %s`; `lakehouse bench --sources 8 --duration %v`\n", lakehouseBin(t), strings.Join(args, " "), total)
	fmt.Fprintf(&b, "- commits: `%s` (one observation per flush, which commits all 8 tables); bucket bounds %s s; p99 interpolated linearly inside a bucket (\">x\": beyond the last bound)\n", metric, les)
	b.WriteString("- per table: max / mean over the tables; data files: live files of the current snapshot; manifests: entries of its manifest list; metadata MB: apparent size of `metadata/`; entries/s and server CPU from the server's counters\n")
	fmt.Fprintf(&b, "- load average (1/5/15 min) at start: %s, at end: %s; catalog read retries while the server ran: %d\n\n", loadStart, loadEnd, retries)
	b.WriteString("| window | commits | mean commit s | p99 commit s | mean flush s | snapshots/table | data files/table | manifests/table | max metadata MB | max files/partition | entries/s | server CPU s/M entries |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range wins {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	fmt.Fprintf(&b, "\nbench: %v\n\nfinal flush: %s\n\n", &sum, strings.Join(strings.Fields(string(flushOut)), " "))
	fmt.Fprintf(&b, "read-back: %d rows, bench acked %d entries; %d duplicate (source_id, entry_seq) pairs; sources with gaps: %v; exact: %v\n",
		rows, sum.Entries, dups, gaps, exact)
	t.Log("\n" + b.String())
	if path := os.Getenv("LAKEHOUSE_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	if !exact {
		t.Errorf("read-back not exact\nserver log:\n%s", readLog(t, srvLog))
	}
}

func soakEnvDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

func soakLoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// commitMetric picks lakehouse_commit_seconds if the server has it, else
// lakehouse_flush_seconds, and lists its bucket bounds.
func commitMetric(m map[string]float64) (name, bounds string) {
	name = "lakehouse_commit_seconds"
	if _, ok := m[name+"_count"]; !ok {
		name = "lakehouse_flush_seconds"
	}
	var les []string
	for _, b := range histDelta(nil, m, name) {
		les = append(les, strconv.FormatFloat(b.le, 'g', -1, 64))
	}
	return name, strings.Join(les, ", ")
}

type bucket struct{ le, n float64 }

// histDelta returns the cumulative bucket counts of cur minus prev, by bound.
func histDelta(prev, cur map[string]float64, name string) []bucket {
	prefix := name + `_bucket{le="`
	var bs []bucket
	for k, v := range cur {
		if strings.HasPrefix(k, prefix) {
			le, _ := strconv.ParseFloat(strings.TrimSuffix(k[len(prefix):], `"}`), 64) // "+Inf" parses
			bs = append(bs, bucket{le, v - prev[k]})
		}
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return bs
}

// quantile interpolates quantile q linearly inside the bucket holding it, as
// Prometheus' histogram_quantile does; over is set when it lies beyond the
// last finite bound, which is then returned.
func quantile(q float64, bs []bucket) (v float64, over bool) {
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN(), false
	}
	rank := q * bs[len(bs)-1].n
	lo, below := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return lo, true
			}
			return lo + (b.le-lo)*(rank-below)/(b.n-below), false
		}
		lo, below = b.le, b.n
	}
	return lo, true
}

// soakRow formats one window: commit times from the histogram deltas, ingest
// rate and server CPU per million entries from the counters, table health.
func soakRow(from, to, span time.Duration, prev, cur map[string]float64, h health) []string {
	name, _ := commitMetric(cur)
	commits, mean := cur[name+"_count"]-prev[name+"_count"], 0.0
	if commits > 0 {
		mean = (cur[name+"_sum"] - prev[name+"_sum"]) / commits
	}
	p99, over := quantile(0.99, histDelta(prev, cur, name))
	p99s := fmt.Sprintf("%.3f", p99)
	if over {
		p99s = ">" + p99s
	}
	// The whole flush (staging what is left, then committing), for
	// comparison with servers that have no separate commit metric.
	flushMean := 0.0
	if n := cur["lakehouse_flush_seconds_count"] - prev["lakehouse_flush_seconds_count"]; n > 0 {
		flushMean = (cur["lakehouse_flush_seconds_sum"] - prev["lakehouse_flush_seconds_sum"]) / n
	}
	entries := cur["lakehouse_entries_accepted_total"] - prev["lakehouse_entries_accepted_total"]
	cpu := (cur["process_cpu_seconds_total"] - prev["process_cpu_seconds_total"]) / max(entries, 1) * 1e6
	n := float64(max(h.tables, 1))
	pair := func(s stat) string { return fmt.Sprintf("%d / %.0f", s.max, float64(s.sum)/n) }
	return []string{from.Round(time.Second).String() + "–" + to.Round(time.Second).String(),
		fmt.Sprintf("%.0f", commits), fmt.Sprintf("%.3f", mean), p99s, fmt.Sprintf("%.3f", flushMean), pair(h.snaps), pair(h.files), pair(h.mans), fmt.Sprintf("%.1f", h.metaMB), strconv.Itoa(h.maxPerPart),
		fmt.Sprintf("%.0f", entries/span.Seconds()), fmt.Sprintf("%.1f", cpu)}
}

type stat struct{ max, sum int }

func (s *stat) add(v int) { s.max, s.sum = max(s.max, v), s.sum+v }

// health is the state of the CDC tables at one instant.
type health struct {
	tables             int
	snaps, files, mans stat
	metaMB             float64
	maxPerPart         int
}

// readHealth opens the catalog (read-only use) and measures every table.
// Manifests are immutable, so cache keeps each one's live data files'
// partitions and only new manifests are read.
func readHealth(dataDir string, cache map[string][]string) (h health, err error) {
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dataDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return h, err
	}
	defer sk.Close()
	seen := map[string]bool{}
	for ident, err := range sk.Catalog().ListTables(ctx, catalog.ToIdentifier(sk.Config().Namespace)) {
		if err != nil {
			return h, err
		}
		tbl, err := sk.Catalog().LoadTable(ctx, ident)
		if err != nil {
			return h, err
		}
		h.tables++
		h.snaps.add(len(tbl.Metadata().Snapshots()))
		loc := tbl.Location()
		if u, err := url.Parse(loc); err == nil && u.Scheme == "file" {
			loc = u.Path
		}
		var size int64 // files may come and go meanwhile: count what is there
		filepath.WalkDir(filepath.Join(loc, "metadata"), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					size += info.Size()
				}
			}
			return nil
		})
		h.metaMB = max(h.metaMB, float64(size)/1e6)
		var list []iceberggo.ManifestFile
		fsys, err := tbl.FS(ctx)
		if snap := tbl.CurrentSnapshot(); snap != nil && err == nil {
			list, err = snap.Manifests(fsys)
		}
		if err != nil {
			return h, err
		}
		files, perPart := 0, map[string]int{}
		for _, m := range list {
			keys, ok := cache[m.FilePath()]
			if !ok {
				for e, err := range m.Entries(fsys, true) {
					if err != nil {
						return h, err
					}
					if e.DataFile().ContentType() == iceberggo.EntryContentData {
						keys = append(keys, fmt.Sprint(e.DataFile().Partition()))
					}
				}
			}
			cache[m.FilePath()], seen[m.FilePath()] = keys, true
			files += len(keys)
			for _, k := range keys {
				perPart[k]++
				h.maxPerPart = max(h.maxPerPart, perPart[k])
			}
		}
		h.files.add(files)
		h.mans.add(len(list))
	}
	for p := range cache {
		if !seen[p] {
			delete(cache, p)
		}
	}
	return h, nil
}

// soakReadBack streams (source_id, entry_seq) of every table (readSink would
// hold hundreds of millions of full rows in memory) into one bitset of entry
// sequences per source, across the tables (W1 puts each entry in one table,
// so a pair found twice anywhere covers "twice in a table").
// gaps lists the sources whose entry sequences are not exactly 1..n.
func soakReadBack(t *testing.T, dataDir string) (rows, dups int64, gaps []string) {
	t.Helper()
	ctx := context.Background()
	sk, err := iceberg.Open(ctx, iceberg.Config{DataDir: dataDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	infos, err := sk.Tables(ctx)
	if err != nil || len(infos) != 8 {
		t.Fatalf("%d Iceberg tables, want the 8 of W1: %v", len(infos), err)
	}
	type seqSet struct {
		bits          []uint64
		distinct, max uint64
	}
	sets := map[string]*seqSet{}
	for _, in := range infos {
		tbl, err := sk.LoadTable(ctx, in.Name)
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := tbl.Scan(table.WithSelectedFields("source_id", "entry_seq")).ToArrowRecords(ctx)
		if err != nil {
			t.Fatalf("scan %s: %v", in.Name, err)
		}
		for rec, err := range recs {
			if err != nil {
				t.Fatalf("scan %s: %v", in.Name, err)
			}
			src := rec.Column(rec.Schema().FieldIndices("source_id")[0]).(interface{ Value(int) string })
			seq := rec.Column(rec.Schema().FieldIndices("entry_seq")[0]).(*array.Int64)
			var set *seqSet
			for i := 0; i < int(rec.NumRows()); i++ {
				if i == 0 || src.Value(i) != src.Value(i-1) {
					if set = sets[src.Value(i)]; set == nil {
						set = &seqSet{}
						sets[strings.Clone(src.Value(i))] = set
					}
				}
				q := uint64(seq.Value(i))
				for uint64(len(set.bits)) <= q/64 {
					set.bits = append(set.bits, make([]uint64, len(set.bits)+1024)...)
				}
				if set.bits[q/64]&(1<<(q%64)) != 0 {
					dups++
				} else {
					set.bits[q/64] |= 1 << (q % 64)
					set.distinct, set.max = set.distinct+1, max(set.max, q)
				}
				rows++
			}
			rec.Release()
		}
	}
	for src, set := range sets {
		if set.bits[0]&1 != 0 || set.distinct != set.max {
			gaps = append(gaps, fmt.Sprintf("%s (%d distinct, max %d)", src, set.distinct, set.max))
		}
	}
	slices.Sort(gaps)
	return rows, dups, gaps
}
