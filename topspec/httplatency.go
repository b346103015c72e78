package topspec

import (
	"math"
	"math/bits"
)

// HTTP response latency histogram (top http): log-linear buckets, 8 per power of two, in
// microseconds. Latencies under 8 µs have a bucket per µs (bucket 0 also holds anything under
// 1 µs); above, bucket b of octave e (2^e ≤ µs < 2^(e+1), e ≥ 3) spans 2^(e-3) µs. Every
// bucket is at most 1/8 of its lower bound wide, so a quantile read from it is within 12.5% of
// the true value (the estimate and the true value share a bucket). Daemons and the plugin
// merge them by adding counts.
const (
	httpSubBits = 3
	httpSub     = 1 << httpSubBits
	// httpMaxOctave is the last octave with buckets of its own: [2^35, 2^36) µs is ~9.5 h;
	// anything longer counts in the last bucket.
	httpMaxOctave = 35
	// HTTPLatencyBuckets is the number of buckets.
	HTTPLatencyBuckets = (httpMaxOctave - httpSubBits + 2) * httpSub
)

// HTTPLatencyBucket is the bucket of a latency in nanoseconds.
func HTTPLatencyBucket(ns uint64) int {
	us := ns / 1000
	if us < httpSub {
		return int(us)
	}
	e := bits.Len64(us) - 1
	if e > httpMaxOctave {
		return HTTPLatencyBuckets - 1
	}
	sub := int(us>>(e-httpSubBits)) & (httpSub - 1)
	return (e-httpSubBits+1)*httpSub + sub
}

// HTTPLatencyBounds returns bucket b's span [lo, hi) in microseconds.
func HTTPLatencyBounds(b int) (lo, hi float64) {
	if b < httpSub {
		return float64(b), float64(b + 1)
	}
	e := b/httpSub + httpSubBits - 1
	sub := b % httpSub
	width := math.Ldexp(1, e-httpSubBits)
	lo = float64(httpSub+sub) * width
	return lo, lo + width
}

// HTTPLatencyQuantile estimates quantile q (0..1) in milliseconds from a histogram in
// HTTPLatencyBucket buckets given sparsely (buckets[i] holds counts[i]; indexes need not be
// sorted but must not repeat). It finds the bucket of the nearest-rank sample (rank ⌈q·n⌉) and
// interpolates linearly inside it. An empty histogram gives 0.
func HTTPLatencyQuantile(buckets []uint32, counts []uint64, q float64) float64 {
	dense := make([]uint64, HTTPLatencyBuckets)
	for i, b := range buckets {
		if int(b) < len(dense) && i < len(counts) {
			dense[b] += counts[i]
		}
	}
	return HTTPLatencyQuantileDense(dense, q)
}

// HTTPLatencyQuantileDense is HTTPLatencyQuantile for a dense histogram (index = bucket).
func HTTPLatencyQuantileDense(hist []uint64, q float64) float64 {
	var total uint64
	for _, n := range hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := max(math.Ceil(q*float64(total)), 1)
	var cum float64
	for b, n := range hist {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			lo, hi := HTTPLatencyBounds(b)
			return (lo + (hi-lo)*(rank-cum-0.5)/float64(n)) / 1000
		}
		cum += float64(n)
	}
	_, hi := HTTPLatencyBounds(len(hist) - 1)
	return hi / 1000
}
