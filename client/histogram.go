package client

import (
	"math/bits"
	"time"
)

// histSub is the number of sub-buckets per power of two (relative error
// about 1/histSub).
const (
	histSubBits = 4
	histSub     = 1 << histSubBits
	histLinear  = 2 * histSub // values below this (in µs) have exact buckets
	histBuckets = histLinear + 40*histSub
)

// Histogram records durations with microsecond resolution in logarithmic
// buckets (about 6% relative error above 32 µs). The zero value is ready to
// use. It is not safe for concurrent use; copy it to snapshot it.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

func histIndex(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	e := bits.Len64(us) - histSubBits - 1 // >= 1
	sub := int(us>>uint(e)) - histSub     // in [0, histSub)
	i := histLinear + (e-1)*histSub + sub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue returns the midpoint of bucket i, in µs.
func histValue(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	e := (i-histLinear)/histSub + 1
	sub := uint64((i-histLinear)%histSub + histSub)
	return sub<<uint(e) + (uint64(1)<<uint(e))/2
}

// Record adds one duration (negative durations count as zero).
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d/time.Microsecond))]++
	h.n++
	h.sum += d
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count returns the number of records.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest duration recorded.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean returns the mean duration, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the q-quantile (0 <= q <= 1), 0 when empty. The result is
// never above Max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(histValue(i))*time.Microsecond, h.max)
		}
	}
	return h.max
}

// LatencySummary is a digest of a Histogram, in milliseconds for JSON.
type LatencySummary struct {
	// Count is the number of records.
	Count uint64 `json:"count"`
	// MeanMs is the mean, in ms.
	MeanMs float64 `json:"meanMs"`
	// P50Ms is the median, in ms.
	P50Ms float64 `json:"p50Ms"`
	// P90Ms is the 90th percentile, in ms.
	P90Ms float64 `json:"p90Ms"`
	// P99Ms is the 99th percentile, in ms.
	P99Ms float64 `json:"p99Ms"`
	// MaxMs is the maximum, in ms.
	MaxMs float64 `json:"maxMs"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Summary digests the histogram.
func (h *Histogram) Summary() LatencySummary {
	return LatencySummary{
		Count:  h.n,
		MeanMs: ms(h.Mean()),
		P50Ms:  ms(h.Quantile(0.50)),
		P90Ms:  ms(h.Quantile(0.90)),
		P99Ms:  ms(h.Quantile(0.99)),
		MaxMs:  ms(h.max),
	}
}
