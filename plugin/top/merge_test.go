package top

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// hist builds a log2 histogram from bucket→count pairs.
func hist(pairs map[int]uint64) []uint64 {
	n := 0
	for b := range pairs {
		n = max(n, b+1)
	}
	h := make([]uint64, n)
	for b, c := range pairs {
		h[b] = c
	}
	return h
}

// crawlerFrames are two nodes' frames: crawler pods on both, coreapi on A.
func crawlerFrames(groupBy isoobsv1.GroupBy) []*isoobsv1.TopFrame {
	a := &isoobsv1.TopFrame{
		Node: "node-a", Time: timestamppb.New(t0.Add(10 * time.Second)), Since: timestamppb.New(t0),
		Interval: durationpb.New(time.Second),
		Rows: []*isoobsv1.DNSRow{{
			Namespace: "tenant-jobs", Pod: "crawler-1", PodUid: "u1", Workload: "crawler", WorkloadKind: "Deployment",
			Cgroup: "/kubepods/pod-u1", CgroupId: 11,
			Queries: 1000, Qps: 100, Responses: 990, Noerror: 100, Nxdomain: 880, Servfail: 10, Malformed: 2,
			ResponsesPerSecond: 99, BytesOut: 40000, BytesIn: 90000,
			LatencyLog2Us: hist(map[int]uint64{10: 900, 14: 90}), LatencyP50Ms: 1.5, LatencyP99Ms: 30,
			QueriesByType: map[string]uint64{"A": 600, "AAAA": 400},
			TopNames:      []*isoobsv1.NameCount{{Name: "a.example.com", Queries: 600, Nxdomain: 590}, {Name: "b.example.com", Queries: 400, Nxdomain: 290}},
			Labels:        map[string]string{"app": "crawler", "pod-template-hash": "aaa"},
		}, {
			Namespace: "tenant-jobs", Pod: "coreapi-1", PodUid: "u2", Workload: "coreapi", WorkloadKind: "Deployment",
			Cgroup: "/kubepods/pod-u2", CgroupId: 12,
			Queries: 50, Qps: 5, Responses: 50, Noerror: 50,
			LatencyLog2Us: hist(map[int]uint64{9: 50}),
			TopNames:      []*isoobsv1.NameCount{{Name: "kafka.tenant-jobs.svc.cluster.local", Queries: 50}},
		}},
		Total:    &isoobsv1.DNSRow{Queries: 1060, Qps: 106, Responses: 1040, Noerror: 150, Nxdomain: 880, Servfail: 10, Malformed: 2},
		TopNames: []*isoobsv1.NameCount{{Name: "a.example.com", Queries: 600, Nxdomain: 590}, {Name: "b.example.com", Queries: 400, Nxdomain: 290}},
		Warnings: []string{"ring buffer lost 3 events"},
	}
	b := &isoobsv1.TopFrame{
		Node: "node-b", Time: timestamppb.New(t0.Add(11 * time.Second)), Since: timestamppb.New(t0.Add(time.Second)),
		Interval: durationpb.New(time.Second),
		Rows: []*isoobsv1.DNSRow{{
			Namespace: "tenant-jobs", Pod: "crawler-2", PodUid: "u3", Workload: "crawler", WorkloadKind: "Deployment",
			Cgroup: "/kubepods/pod-u3", CgroupId: 21,
			Queries: 500, Qps: 50, Responses: 500, Noerror: 50, Nxdomain: 450,
			ResponsesPerSecond: 50, BytesOut: 20000, BytesIn: 45000,
			LatencyLog2Us: hist(map[int]uint64{10: 450, 12: 50}), LatencyP50Ms: 1.6, LatencyP99Ms: 7,
			QueriesByType: map[string]uint64{"A": 500},
			TopNames:      []*isoobsv1.NameCount{{Name: "A.example.com", Queries: 300, Nxdomain: 300, Error: 4}, {Name: "c.example.com", Queries: 200, Nxdomain: 150}},
			Labels:        map[string]string{"app": "crawler", "pod-template-hash": "bbb"},
		}},
		Total:    &isoobsv1.DNSRow{Queries: 500, Qps: 50, Responses: 500, Noerror: 50, Nxdomain: 450},
		TopNames: []*isoobsv1.NameCount{{Name: "a.example.com", Queries: 300, Nxdomain: 300}, {Name: "c.example.com", Queries: 200, Nxdomain: 150}},
	}
	if groupBy == isoobsv1.GroupBy_GROUP_BY_WORKLOAD {
		// What a daemon sends for workload grouping: pod fields empty.
		for _, f := range []*isoobsv1.TopFrame{a, b} {
			for _, r := range f.Rows {
				r.Pod, r.PodUid, r.Cgroup, r.CgroupId, r.Pods = "", "", "", 0, 1
			}
		}
	}
	return []*isoobsv1.TopFrame{a, b}
}

func findRow(t *testing.T, f Frame, groupBy, name string) Row {
	t.Helper()
	for _, r := range f.Rows {
		if r.DisplayName(groupBy) == name {
			return r
		}
	}
	t.Fatalf("no row %q in %+v", name, f.Rows)
	return Row{}
}

func closeTo(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestMergeWorkloadAcrossNodesIsExact(t *testing.T) {
	f := Merge(crawlerFrames(isoobsv1.GroupBy_GROUP_BY_WORKLOAD), MergeOptions{GroupBy: GroupByWorkload, TopNames: 2})
	if len(f.Rows) != 2 {
		t.Fatalf("want 2 workload rows (crawler, coreapi), got %d: %+v", len(f.Rows), f.Rows)
	}
	c := findRow(t, f, GroupByWorkload, "tenant-jobs/crawler")
	if c.Node != "node-a,node-b" || c.Pods != 2 || c.Namespace != "tenant-jobs" || c.Workload != "crawler" || c.WorkloadKind != "Deployment" {
		t.Errorf("identity: node=%q pods=%d ns=%q wl=%q kind=%q", c.Node, c.Pods, c.Namespace, c.Workload, c.WorkloadKind)
	}
	if c.Queries != 1500 || c.QPS != 150 || c.Responses != 1490 || c.ResponsesPerSecond != 149 || c.NoError != 150 ||
		c.NXDomain != 1330 || c.ServFail != 10 || c.Refused != 0 || c.Malformed != 2 || c.BytesOut != 60000 || c.BytesIn != 135000 {
		t.Errorf("sums wrong: %+v", c)
	}
	if c.Errors() != 1340 {
		t.Errorf("errors = %d, want 1340", c.Errors())
	}
	if !reflect.DeepEqual(c.QueriesByType, map[string]uint64{"A": 1100, "AAAA": 400}) {
		t.Errorf("qtypes = %v", c.QueriesByType)
	}
	if want := hist(map[int]uint64{10: 1350, 12: 50, 14: 90}); !reflect.DeepEqual(c.LatencyHistogram(), want) {
		t.Errorf("merged histogram = %v, want %v", c.LatencyHistogram(), want)
	}
	// 1490 samples. p50: rank 745 lies in bucket 10 ([1024,2048) µs) at
	// 745/1350 of it. p99: rank 1475.1, past 1400 samples in buckets 10 and
	// 12, lies in bucket 14 ([16384,32768) µs) at 75.1/90 of it.
	if want := 1.024 * (1 + 745.0/1350); !closeTo(c.LatencyP50Ms, want) {
		t.Errorf("p50 = %v ms, want %v", c.LatencyP50Ms, want)
	}
	if want := 16.384 * (1 + 75.1/90); !closeTo(c.LatencyP99Ms, want) {
		t.Errorf("p99 = %v ms, want %v", c.LatencyP99Ms, want)
	}
	// Names merge case-insensitively; Space-Saving error bounds add up.
	wantNames := []NameCount{{Name: "a.example.com", Queries: 900, NXDomain: 890, Error: 4}, {Name: "b.example.com", Queries: 400, NXDomain: 290}}
	if !reflect.DeepEqual(c.TopNames, wantNames) {
		t.Errorf("top names = %+v, want %+v", c.TopNames, wantNames)
	}
	// Labels survive only where all merged rows agree.
	if !reflect.DeepEqual(c.Labels, map[string]string{"app": "crawler"}) {
		t.Errorf("labels = %v", c.Labels)
	}

	if f.Total.Queries != 1560 || f.Total.QPS != 156 || f.Total.NXDomain != 1330 || f.Total.Responses != 1540 || f.Total.Pods != 3 {
		t.Errorf("total = %+v", f.Total)
	}
	wantFrameNames := []NameCount{{Name: "a.example.com", Queries: 900, NXDomain: 890}, {Name: "b.example.com", Queries: 400, NXDomain: 290}}
	if !reflect.DeepEqual(f.TopNames, wantFrameNames) {
		t.Errorf("frame top names = %+v", f.TopNames)
	}
	if !reflect.DeepEqual(f.Nodes, []string{"node-a", "node-b"}) {
		t.Errorf("nodes = %v", f.Nodes)
	}
	if !f.Since.Equal(t0) || !f.Time.Equal(t0.Add(11*time.Second)) || f.IntervalSeconds != 1 {
		t.Errorf("since/time/interval = %v %v %v", f.Since, f.Time, f.IntervalSeconds)
	}
	if !reflect.DeepEqual(f.Warnings, []string{"node-a: ring buffer lost 3 events"}) {
		t.Errorf("warnings = %v", f.Warnings)
	}
}

func TestMergePodRowsStaySeparate(t *testing.T) {
	f := Merge(crawlerFrames(isoobsv1.GroupBy_GROUP_BY_POD), MergeOptions{GroupBy: GroupByPod})
	if len(f.Rows) != 3 {
		t.Fatalf("want 3 pod rows, got %d", len(f.Rows))
	}
	c := findRow(t, f, GroupByPod, "tenant-jobs/crawler-1")
	if c.Node != "node-a" || c.PodUID != "u1" || c.Cgroup != "/kubepods/pod-u1" || c.CgroupID != 11 || c.Pods != 1 || c.Queries != 1000 {
		t.Errorf("crawler-1 = %+v", c)
	}
	// One source row: percentiles come from its histogram (900 in bucket 10,
	// 90 in bucket 14), not from the daemon's own p50/p99 figures.
	if want := 1.024 * (1 + 495.0/900); !closeTo(c.LatencyP50Ms, want) {
		t.Errorf("p50 = %v, want %v", c.LatencyP50Ms, want)
	}
	// TopNames 0 keeps every name.
	if len(c.TopNames) != 2 {
		t.Errorf("top names = %+v", c.TopNames)
	}
}

func TestMergeSingleSourceKeepsDaemonPercentilesWithoutHistogram(t *testing.T) {
	f := &isoobsv1.TopFrame{Node: "n1", Rows: []*isoobsv1.DNSRow{
		{Namespace: "ns", Workload: "web", Pod: "web-1", Pods: 1, Responses: 10, LatencyP50Ms: 2, LatencyP99Ms: 9},
		{Namespace: "ns", Workload: "web", Pod: "web-2", Pods: 1, Responses: 30, LatencyP50Ms: 3, LatencyP99Ms: 12},
	}}
	got := Merge([]*isoobsv1.TopFrame{f}, MergeOptions{GroupBy: GroupByWorkload})
	if len(got.Rows) != 1 {
		t.Fatalf("rows = %+v", got.Rows)
	}
	r := got.Rows[0]
	// No histogram to merge: the row with most responses speaks for the group.
	if r.LatencyP50Ms != 3 || r.LatencyP99Ms != 12 || r.Pods != 2 || r.Pod != "" || r.Node != "n1" {
		t.Errorf("row = %+v", r)
	}
	// Without a frame total, the total is summed from rows.
	if got.Total.Responses != 40 {
		t.Errorf("total responses = %d", got.Total.Responses)
	}
}

func TestMergeUnresolvedRowsKeyedByNodeAndCgroup(t *testing.T) {
	row := func(cg string, id uint64) *isoobsv1.DNSRow {
		return &isoobsv1.DNSRow{Cgroup: cg, CgroupId: id, Queries: 7}
	}
	frames := []*isoobsv1.TopFrame{
		{Node: "a", Rows: []*isoobsv1.DNSRow{row("/system.slice/x", 5), row("/system.slice/y", 6)}},
		{Node: "b", Rows: []*isoobsv1.DNSRow{row("/system.slice/x", 5)}},
	}
	got := Merge(frames, MergeOptions{GroupBy: GroupByPod})
	if len(got.Rows) != 3 {
		t.Fatalf("unresolved rows from different nodes or cgroups must not merge: %+v", got.Rows)
	}
	ns := Merge(frames, MergeOptions{GroupBy: GroupByNamespace})
	if len(ns.Rows) != 1 || ns.Rows[0].Queries != 21 || ns.Rows[0].Cgroup != "" || ns.Rows[0].Node != "a,b" {
		t.Errorf("namespace grouping: %+v", ns.Rows)
	}
}

func TestMergeQNameAndNodeGrouping(t *testing.T) {
	frames := []*isoobsv1.TopFrame{
		{Node: "a", Rows: []*isoobsv1.DNSRow{
			{Qname: "api.example.com", Queries: 10, TopNames: []*isoobsv1.NameCount{{Name: "api.example.com", Queries: 10}}},
			{Queries: 4, TopNames: []*isoobsv1.NameCount{{Name: "db.example.com", Queries: 4}}},
			{Labels: map[string]string{QNameLabel: "db.example.com"}, Queries: 1},
		}},
		{Node: "b", Rows: []*isoobsv1.DNSRow{
			{Queries: 5, TopNames: []*isoobsv1.NameCount{{Name: "API.example.com", Queries: 5}}},
		}},
	}
	got := Merge(frames, MergeOptions{GroupBy: GroupByQName})
	if len(got.Rows) != 2 {
		t.Fatalf("rows = %+v", got.Rows)
	}
	if db := findRow(t, got, GroupByQName, "db.example.com"); db.Queries != 5 {
		t.Errorf("db row = %+v", db)
	}
	api := findRow(t, got, GroupByQName, "api.example.com")
	if api.Queries != 15 || api.Node != "a,b" {
		t.Errorf("api row = %+v", api)
	}
	byNode := Merge(frames, MergeOptions{GroupBy: GroupByNode})
	if a := findRow(t, byNode, GroupByNode, "a"); a.Queries != 15 {
		t.Errorf("node a = %+v", a)
	}
}

func TestSortedLimited(t *testing.T) {
	f := Merge(crawlerFrames(isoobsv1.GroupBy_GROUP_BY_POD), MergeOptions{GroupBy: GroupByPod})
	order := func(fr Frame) []string {
		var names []string
		for _, r := range fr.Rows {
			names = append(names, r.Pod)
		}
		return names
	}
	tests := []struct {
		key   string
		limit int
		want  []string
		trunc int
	}{
		{SortQPS, 0, []string{"crawler-1", "crawler-2", "coreapi-1"}, 0},
		{SortNXDomain, 2, []string{"crawler-1", "crawler-2"}, 1},
		{SortName, 0, []string{"coreapi-1", "crawler-1", "crawler-2"}, 0},
		{SortMalformed, 1, []string{"crawler-1"}, 2},
		{SortLatency, 0, []string{"crawler-1", "crawler-2", "coreapi-1"}, 0},
		// Ties on the key: more queries first.
		{SortServFail, 0, []string{"crawler-1", "crawler-2", "coreapi-1"}, 0},
	}
	for _, tt := range tests {
		got := f.SortedLimited(tt.key, tt.limit)
		if !reflect.DeepEqual(order(got), tt.want) || got.Truncated != tt.trunc || got.Sort != tt.key {
			t.Errorf("sort %s limit %d: got %v truncated %d, want %v truncated %d", tt.key, tt.limit, order(got), got.Truncated, tt.want, tt.trunc)
		}
	}
	if f.Sort != "" || len(f.Rows) != 3 {
		t.Errorf("SortedLimited changed its receiver")
	}
}

func TestParseKeysAndNextSort(t *testing.T) {
	if k, err := ParseSort(" NXDOMAIN "); err != nil || k != SortNXDomain {
		t.Errorf("ParseSort: %q %v", k, err)
	}
	if _, err := ParseSort("bogus"); err == nil || !strings.Contains(err.Error(), "qps, queries, nxdomain, servfail, timeouts, errors, latency, malformed, name") {
		t.Errorf("ParseSort(bogus) error must list the keys: %v", err)
	}
	if g, pg, err := ParseGroupBy("workload"); err != nil || g != GroupByWorkload || pg != isoobsv1.GroupBy_GROUP_BY_WORKLOAD {
		t.Errorf("ParseGroupBy: %v %v %v", g, pg, err)
	}
	if _, _, err := ParseGroupBy("team"); err == nil {
		t.Error("ParseGroupBy(team) must fail")
	}
	if NextSort(SortName, 1) != SortQPS || NextSort(SortQPS, -1) != SortName || NextSort(SortQPS, 1) != SortQueries {
		t.Error("NextSort must wrap around both ways")
	}
}
