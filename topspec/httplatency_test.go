package topspec

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHTTPLatencyBuckets: every latency lies in its bucket, buckets tile the range without gaps,
// and each is at most 1/8 of its lower bound wide (past the 1 µs buckets under 8 µs).
func TestHTTPLatencyBuckets(t *testing.T) {
	prevHi := 0.0
	for b := 0; b < HTTPLatencyBuckets; b++ {
		lo, hi := HTTPLatencyBounds(b)
		if lo != prevHi || hi <= lo || (b >= 8 && hi-lo > lo/8) {
			t.Fatalf("bucket %d: [%v, %v) after %v", b, lo, hi, prevHi)
		}
		prevHi = hi
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		ns := r.Uint64N(1 << 45)
		b := HTTPLatencyBucket(ns)
		lo, hi := HTTPLatencyBounds(b)
		if us := float64(ns / 1000); b < HTTPLatencyBuckets-1 && (us < lo || us >= hi) {
			t.Fatalf("%d ns in bucket %d [%v, %v) µs", ns, b, lo, hi)
		}
	}
}

// TestHTTPLatencyQuantile: against 10,000 random latencies, p50/p95/p99 are within 12.5% of the
// exact nearest-rank values (in the same bucket).
func TestHTTPLatencyQuantile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	hist := make([]uint64, HTTPLatencyBuckets)
	var us []uint64
	for i := 0; i < 10000; i++ {
		ns := uint64(r.ExpFloat64() * 5e6) // mean 5 ms
		us = append(us, ns/1000)
		hist[HTTPLatencyBucket(ns)]++
	}
	slices.Sort(us)
	for _, q := range []float64{0.5, 0.95, 0.99} {
		exact := float64(us[int(q*10000)-1])
		got := HTTPLatencyQuantileDense(hist, q) * 1000
		lo, hi := HTTPLatencyBounds(HTTPLatencyBucket(uint64(exact) * 1000))
		if got < lo || got >= hi {
			t.Errorf("q%v: %v µs, exact %v µs in [%v, %v)", q, got, exact, lo, hi)
		}
	}
	if HTTPLatencyQuantile(nil, nil, 0.5) != 0 {
		t.Error("empty histogram")
	}
	if got := HTTPLatencyQuantile([]uint32{uint32(HTTPLatencyBucket(3e6))}, []uint64{7}, 0.99); got < 2.9 || got > 3.1 {
		t.Errorf("sparse: %v ms", got)
	}
}
