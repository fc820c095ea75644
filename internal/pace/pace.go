// Package pace lets long CPU-bound background work (staging, compaction)
// hand its processor to the goroutines that acknowledge writes.
//
// Go's scheduler preempts a running goroutine only after 10 ms or more.
// Staging and compaction each keep a processor busy for seconds at a time,
// so on a machine of two cores they held both processors for slices of up
// to 25 ms, and a goroutine that a connection's data or a log sync had made
// runnable waited behind them: in a 10-s execution trace at 150,000
// entries/s with compaction running (internal/schedtrace), the gRPC
// transport's readers waited 6 ms at p90 and 25 ms at p99 to run.
//
// Work that calls a Pacer's Yield in its loops steps aside once per
// Interval. With it, in the same load, the readers waited 2.4 ms at p90 and
// 8 ms at p99, and the acks' p90 went from 38-54 ms to 17-23 ms (3- and
// 5-minute runs), for the same CPU within the machine's noise. Inside
// arrow-go's calls, where no Pacer reaches, the sink's zstd codec steps
// aside after every Parquet page it compresses (iceberg/zstdcodec.go).
package pace

import (
	"runtime"
	"time"
)

// Interval is how long background work runs between yields: about the
// longest a runnable goroutine waits behind it.
const Interval = time.Millisecond

// Pacer yields at most once per Interval. The zero value is ready to use;
// a Pacer belongs to one goroutine.
type Pacer struct {
	next time.Time
}

// Yield lets the goroutines waiting for a processor run first, if Interval
// has passed since the last yield. A nil Pacer never yields.
func (p *Pacer) Yield() {
	if p == nil {
		return
	}
	now := time.Now()
	if now.Before(p.next) {
		return
	}
	// Gosched puts the caller at the back of the global run queue, behind
	// what the network poller has made runnable. A short sleep instead
	// (which would also make the processor poll the network) measured
	// worse: the caller came back first, from the processor's next slot.
	runtime.Gosched()
	p.next = time.Now().Add(Interval)
}
