// Package topspec holds the rules of a top view that the daemon and the plugin must apply
// alike: the sort keys and how rows are ordered by them (the daemon keeps the first rows of a
// frame by this order, the plugin re-sorts merged frames by it), and how a latency percentile
// is read from a log2 histogram (one node's figures read the same merged or not).
package topspec

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Sort keys. All but SortName sort descending.
const (
	SortQPS       = "qps"
	SortQueries   = "queries"
	SortNXDomain  = "nxdomain"
	SortServFail  = "servfail"
	SortTimeouts  = "timeouts"
	SortErrors    = "errors"
	SortLatency   = "latency"
	SortMalformed = "malformed"
	SortName      = "name"
)

// SortKeys lists the sort keys in the order the live view cycles through them.
var SortKeys = []string{SortQPS, SortQueries, SortNXDomain, SortServFail, SortTimeouts, SortErrors, SortLatency, SortMalformed, SortName}

// ParseSort returns the sort key s names (case and surrounding space ignored); flag names the
// option in the error, e.g. "--sort".
func ParseSort(s, flag string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(SortKeys, key) {
		return key, nil
	}
	return "", fmt.Errorf("invalid %s %q: valid keys are %s (e.g. %s nxdomain)", flag, s, strings.Join(SortKeys, ", "), flag)
}

// Metrics are the figures of a row that sort keys read.
type Metrics struct {
	QPS                                            float64
	Queries, NXDomain, ServFail, Errors, Malformed uint64
	Timeouts                                       uint64
	LatencyP99Ms                                   float64
}

func (m *Metrics) by(key string) float64 {
	switch key {
	case SortQueries:
		return float64(m.Queries)
	case SortNXDomain:
		return float64(m.NXDomain)
	case SortServFail:
		return float64(m.ServFail)
	case SortTimeouts:
		return float64(m.Timeouts)
	case SortErrors:
		return float64(m.Errors)
	case SortLatency:
		return m.LatencyP99Ms
	case SortMalformed:
		return float64(m.Malformed)
	default:
		return m.QPS
	}
}

// Compare orders two rows for key: the larger figure first, then (equal figures, e.g. two
// idle rows by rate) more queries first, then names ascending, so the order is total and
// the same on every node and in the plugin. SortName orders by name alone.
func Compare(key string, a, b *Metrics, nameA, nameB string) int {
	if key != SortName {
		if c := cmp.Compare(b.by(key), a.by(key)); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Queries, a.Queries); c != 0 {
			return c
		}
	}
	return strings.Compare(nameA, nameB)
}

// Log2Quantile estimates quantile q (0..1) in milliseconds from a log2 histogram whose bucket
// i counts latencies in [2^i, 2^(i+1)) µs (bucket 0 also holds anything under 1 µs, so it
// spans [0, 2)): it finds the bucket holding the q-th sample and interpolates linearly inside
// it. The true value lies in that bucket, so the estimate is off by less than a factor of two.
// An empty histogram gives 0.
func Log2Quantile(hist []uint64, q float64) float64 {
	var total uint64
	for _, n := range hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := max(q*float64(total), 1)
	var cum float64
	for i, n := range hist {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			lo, hi := math.Ldexp(1, i), math.Ldexp(1, i+1)
			if i == 0 {
				lo = 0
			}
			return (lo + (hi-lo)*(rank-cum)/float64(n)) / 1000
		}
		cum += float64(n)
	}
	return math.Ldexp(1, len(hist)) / 1000
}
