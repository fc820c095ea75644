// Command schedtrace reads a Go execution trace and reports, per kind of
// goroutine (its outermost function), how long its goroutines waited for a
// processor once runnable, and how long they ran before they stopped. It
// is how the ack latency's tail was traced to staging and compaction
// holding the processors (internal/pace):
//
//	lakehouse serve --pprof ...   # and a load
//	curl -o trace.out 'http://127.0.0.1:8080/debug/pprof/trace?seconds=10'
//	go run ./internal/schedtrace trace.out
package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schedtrace TRACE_FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	kinds, err := analyze(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	report(os.Stdout, kinds, 20)
}

// kind is what the trace shows of one kind of goroutine.
type kind struct {
	name string
	// waits are the times from runnable to running.
	waits []time.Duration
	// runs are the times from running to anything else.
	runs []time.Duration
}

// analyze reads a trace and returns its goroutines' waits and runs by kind.
func analyze(r io.Reader) (map[string]*kind, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	var (
		name       = make(map[trace.GoID]string)
		runnableAt = make(map[trace.GoID]trace.Time)
		runningAt  = make(map[trace.GoID]trace.Time)
		waits      = make(map[trace.GoID][]time.Duration)
		runs       = make(map[trace.GoID][]time.Duration)
	)
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read trace: %w", err)
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		if name[id] == "" {
			// A goroutine that existed before the trace began is named by
			// the first stack it shows, at its first stop.
			if n := outermost(st.Stack); n != "" {
				name[id] = n
			} else if n := outermost(ev.Stack()); n != "" {
				name[id] = n
			}
		}
		from, to := st.Goroutine()
		switch {
		case to == trace.GoRunnable:
			runnableAt[id] = ev.Time()
		case to == trace.GoRunning:
			if t, ok := runnableAt[id]; ok {
				waits[id] = append(waits[id], time.Duration(ev.Time()-t))
				delete(runnableAt, id)
			}
			runningAt[id] = ev.Time()
		}
		if from == trace.GoRunning {
			if t, ok := runningAt[id]; ok {
				runs[id] = append(runs[id], time.Duration(ev.Time()-t))
				delete(runningAt, id)
			}
		}
	}
	kinds := make(map[string]*kind)
	get := func(id trace.GoID) *kind {
		n := cmp.Or(name[id], "(unknown)")
		k := kinds[n]
		if k == nil {
			k = &kind{name: n}
			kinds[n] = k
		}
		return k
	}
	for id, w := range waits {
		k := get(id)
		k.waits = append(k.waits, w...)
	}
	for id, r := range runs {
		k := get(id)
		k.runs = append(k.runs, r...)
	}
	return kinds, nil
}

// outermost returns the outermost function of stk ("" if it has none).
func outermost(stk trace.Stack) string {
	var fn string
	for f := range stk.Frames() {
		fn = f.Func
	}
	return fn
}

// report prints the kinds that waited most often, then those that ran
// longest in all.
func report(w io.Writer, kinds map[string]*kind, top int) {
	all := slices.Collect(maps.Values(kinds))
	for _, k := range all {
		slices.Sort(k.waits)
		slices.Sort(k.runs)
	}
	fmt.Fprintln(w, "waits for a processor, once runnable:")
	slices.SortFunc(all, func(a, b *kind) int {
		return cmp.Or(cmp.Compare(len(b.waits), len(a.waits)), strings.Compare(a.name, b.name))
	})
	for _, k := range all[:min(top, len(all))] {
		if len(k.waits) > 0 {
			fmt.Fprintf(w, "  %7d  p50 %9v  p90 %9v  p99 %9v  max %9v  %s\n", len(k.waits),
				quantile(k.waits, .5), quantile(k.waits, .9), quantile(k.waits, .99), k.waits[len(k.waits)-1], k.name)
		}
	}
	fmt.Fprintln(w, "runs before stopping:")
	slices.SortFunc(all, func(a, b *kind) int {
		return cmp.Or(cmp.Compare(sum(b.runs), sum(a.runs)), strings.Compare(a.name, b.name))
	})
	for _, k := range all[:min(top, len(all))] {
		if len(k.runs) > 0 {
			fmt.Fprintf(w, "  total %9v  %7d  p50 %9v  p99 %9v  max %9v  %s\n", sum(k.runs).Round(time.Millisecond), len(k.runs),
				quantile(k.runs, .5), quantile(k.runs, .99), k.runs[len(k.runs)-1], k.name)
		}
	}
}

// quantile returns the q quantile of sorted, which is not empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(float64(len(sorted)-1)*q)]
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}
