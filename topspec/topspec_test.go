package topspec

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestLog2Quantile(t *testing.T) {
	tests := []struct {
		name string
		hist []uint64
		q    float64
		want float64 // ms
	}{
		{"empty", nil, 0.5, 0},
		{"zeros", []uint64{0, 0}, 0.99, 0},
		{"middle of bucket 2", []uint64{0, 0, 4}, 0.5, 0.006},                         // [4,8) µs, rank 2 of 4
		{"top of bucket 2", []uint64{0, 0, 4}, 1, 0.008},                              // upper edge
		{"first bucket", []uint64{10}, 0.1, 0.0002},                                   // [0,2) µs, rank 1 of 10
		{"rank below one", []uint64{0, 0, 0, 1000}, 0.0001, 0.008 + 0.008/1000},       // rank 0.1 counts as 1
		{"split", []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 50}, 0.99, 2.048 * 1.98}, // bucket 11 [2048,4096) µs, 49/50
		{"tail", append(make([]uint64, 20), 1), 0.999, 2097.152},                      // bucket 20 [2^20, 2^21) µs; rank 0.999 of 1 counts as 1: the top edge
	}
	for _, tt := range tests {
		if got := Log2Quantile(tt.hist, tt.q); math.Abs(got-tt.want) > 1e-9*math.Max(1, tt.want) {
			t.Errorf("%s: got %v ms, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCompareOrdersRows(t *testing.T) {
	type row struct {
		name string
		m    Metrics
	}
	rows := []row{
		{"b-idle", Metrics{Queries: 5}},
		{"a-idle", Metrics{Queries: 5}},
		{"crawler", Metrics{QPS: 900, Queries: 9000, NXDomain: 4500, Errors: 4500}},
		{"slow", Metrics{QPS: 10, Queries: 100, LatencyP99Ms: 250}},
		{"busy-idle", Metrics{Queries: 70}},
	}
	order := func(key string) string {
		rs := slices.Clone(rows)
		slices.SortStableFunc(rs, func(a, b row) int { return Compare(key, &a.m, &b.m, a.name, b.name) })
		var names []string
		for _, r := range rs {
			names = append(names, r.name)
		}
		return strings.Join(names, " ")
	}
	for key, want := range map[string]string{
		SortQPS:     "crawler slow busy-idle a-idle b-idle", // equal rates: more queries, then name
		SortLatency: "slow crawler busy-idle a-idle b-idle",
		SortErrors:  "crawler slow busy-idle a-idle b-idle",
		SortName:    "a-idle b-idle busy-idle crawler slow",
	} {
		if got := order(key); got != want {
			t.Errorf("sort %s: %s, want %s", key, got, want)
		}
	}
}

func TestParseSort(t *testing.T) {
	if k, err := ParseSort(" NXDomain ", "--sort"); err != nil || k != SortNXDomain {
		t.Fatalf("ParseSort(NXDomain) = %q, %v", k, err)
	}
	_, err := ParseSort("rate", "--sort")
	if err == nil || err.Error() != `invalid --sort "rate": valid keys are qps, queries, nxdomain, servfail, timeouts, errors, latency, malformed, name (e.g. --sort nxdomain)` {
		t.Fatalf("ParseSort(rate) error = %v", err)
	}
}
