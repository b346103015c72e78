package top

import (
	"fmt"
	"sort"
	"strings"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Sort keys accepted by --sort. All but "name" sort descending.
const (
	SortQPS       = "qps"
	SortQueries   = "queries"
	SortNXDomain  = "nxdomain"
	SortServFail  = "servfail"
	SortErrors    = "errors"
	SortLatency   = "latency"
	SortMalformed = "malformed"
	SortName      = "name"
)

// SortKeys lists the sort keys in the order the live view cycles through them.
var SortKeys = []string{SortQPS, SortQueries, SortNXDomain, SortServFail, SortErrors, SortLatency, SortMalformed, SortName}

// Groupings accepted by --group-by.
const (
	GroupByPod       = "pod"
	GroupByWorkload  = "workload"
	GroupByNamespace = "namespace"
	GroupByQName     = "qname"
	GroupByNode      = "node"
)

// GroupBys lists the groupings accepted by --group-by.
var GroupBys = []string{GroupByPod, GroupByWorkload, GroupByNamespace, GroupByQName, GroupByNode}

var groupByProto = map[string]isoobsv1.GroupBy{
	GroupByPod:       isoobsv1.GroupBy_GROUP_BY_POD,
	GroupByWorkload:  isoobsv1.GroupBy_GROUP_BY_WORKLOAD,
	GroupByNamespace: isoobsv1.GroupBy_GROUP_BY_NAMESPACE,
	GroupByQName:     isoobsv1.GroupBy_GROUP_BY_QNAME,
	GroupByNode:      isoobsv1.GroupBy_GROUP_BY_NODE,
}

// ParseSort checks a --sort value.
func ParseSort(s string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	for _, k := range SortKeys {
		if k == key {
			return k, nil
		}
	}
	return "", fmt.Errorf("invalid --sort %q: valid keys are %s (e.g. --sort nxdomain)", s, strings.Join(SortKeys, ", "))
}

// ParseGroupBy checks a --group-by value and returns its wire form.
func ParseGroupBy(s string) (string, isoobsv1.GroupBy, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if g, ok := groupByProto[key]; ok {
		return key, g, nil
	}
	return "", 0, fmt.Errorf("invalid --group-by %q: valid values are %s (e.g. --group-by workload)", s, strings.Join(GroupBys, ", "))
}

// NextSort returns the sort key after (step 1) or before (step -1) current.
func NextSort(current string, step int) string {
	for i, k := range SortKeys {
		if k == current {
			n := len(SortKeys)
			return SortKeys[((i+step)%n+n)%n]
		}
	}
	return SortKeys[0]
}

// SortRows orders rows by key: largest first for counters and latency,
// alphabetical for "name". Ties fall back to the display name so output is
// deterministic.
func SortRows(rows []Row, key, groupBy string) {
	metric := func(r *Row) float64 {
		switch key {
		case SortQueries:
			return float64(r.Queries)
		case SortNXDomain:
			return float64(r.NXDomain)
		case SortServFail:
			return float64(r.ServFail)
		case SortErrors:
			return float64(r.Errors())
		case SortLatency:
			return r.LatencyP99Ms
		case SortMalformed:
			return float64(r.Malformed)
		default:
			return r.QPS
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := &rows[i], &rows[j]
		if key != SortName {
			if ma, mb := metric(a), metric(b); ma != mb {
				return ma > mb
			}
			// Equal rates: the larger count first.
			if a.Queries != b.Queries {
				return a.Queries > b.Queries
			}
		}
		na, nb := a.DisplayName(groupBy), b.DisplayName(groupBy)
		if na != nb {
			return na < nb
		}
		return a.Node < b.Node
	})
}

// SortedLimited returns a copy of f with rows sorted by key and cut to limit
// rows (0 = all); cut rows are added to Truncated. f is left unchanged, so
// the live view can re-sort the same frame when the user changes the key.
func (f Frame) SortedLimited(key string, limit int) Frame {
	out := f
	out.Sort = key
	out.Rows = append(make([]Row, 0, len(f.Rows)), f.Rows...) // [] not null in JSON
	SortRows(out.Rows, key, f.GroupBy)
	if limit > 0 && len(out.Rows) > limit {
		out.Truncated += len(out.Rows) - limit
		out.Rows = out.Rows[:limit]
	}
	return out
}
