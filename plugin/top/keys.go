package top

import (
	"fmt"
	"slices"
	"strings"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// Sort keys accepted by --sort (topspec's: the daemon sorts by the same rules).
const (
	SortQPS       = topspec.SortQPS
	SortQueries   = topspec.SortQueries
	SortNXDomain  = topspec.SortNXDomain
	SortServFail  = topspec.SortServFail
	SortTimeouts  = topspec.SortTimeouts
	SortErrors    = topspec.SortErrors
	SortLatency   = topspec.SortLatency
	SortMalformed = topspec.SortMalformed
	SortName      = topspec.SortName
)

// SortKeys lists the sort keys in the order the live view cycles through them.
var SortKeys = topspec.SortKeys

// Groupings accepted by --group-by.
const (
	GroupByPod       = "pod"
	GroupByWorkload  = "workload"
	GroupByNamespace = "namespace"
	GroupByQName     = "qname"
	GroupByNode      = "node"
)

// GroupBys lists the groupings accepted by --group-by.
var GroupBys = []string{GroupByPod, GroupByWorkload, GroupByNamespace, GroupByQName, GroupByNode, GroupByServer}

var groupByProto = map[string]isoobsv1.GroupBy{
	GroupByPod:       isoobsv1.GroupBy_GROUP_BY_POD,
	GroupByWorkload:  isoobsv1.GroupBy_GROUP_BY_WORKLOAD,
	GroupByNamespace: isoobsv1.GroupBy_GROUP_BY_NAMESPACE,
	GroupByQName:     isoobsv1.GroupBy_GROUP_BY_QNAME,
	GroupByNode:      isoobsv1.GroupBy_GROUP_BY_NODE,
	// The daemons send pod rows; Merge regroups them by server.
	GroupByServer: isoobsv1.GroupBy_GROUP_BY_POD,
}

// ParseSort checks a --sort value.
func ParseSort(s string) (string, error) { return topspec.ParseSort(s, "--sort") }

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

// SortRows orders rows by key with the daemon's rule (topspec.Compare): largest first for
// counters and latency, alphabetical for "name"; ties fall back to the display name, then
// the node, so output is deterministic.
func SortRows(rows []Row, key, groupBy string) {
	metrics := func(r *Row) topspec.Metrics {
		return topspec.Metrics{QPS: r.QPS, Queries: r.Queries, NXDomain: r.NXDomain, ServFail: r.ServFail,
			Errors: r.Errors(), Malformed: r.Malformed, LatencyP99Ms: r.LatencyP99Ms, Timeouts: r.Timeouts}
	}
	slices.SortStableFunc(rows, func(a, b Row) int {
		ma, mb := metrics(&a), metrics(&b)
		return topspec.Compare(key, &ma, &mb, a.DisplayName(groupBy)+"\x00"+a.Node, b.DisplayName(groupBy)+"\x00"+b.Node)
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
