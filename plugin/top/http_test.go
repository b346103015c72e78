package top

import (
	"fmt"
	"reflect"
	"testing"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

func httpProtoRow(node, pod, dir string, client bool, req, s5 uint64, latencyNS uint64, paths ...*isoobsv1.HTTPPathCount) *isoobsv1.HTTPRow {
	return &isoobsv1.HTTPRow{Node: node, Namespace: "tenant-jobs", Pod: pod, Workload: "coreapi", WorkloadKind: "Deployment", Client: client, Direction: dir,
		Labels: map[string]string{"app": "coreapi"}, Requests: req, Responses: req, Status_5Xx: s5, Status_2Xx: req - s5, RequestsPerSecond: float64(req),
		LatencyBuckets: []uint32{uint32(topspec.HTTPLatencyBucket(latencyNS))}, LatencyCounts: []uint64{req}, Paths: paths}
}

// TestMergeHTTPDeduplicatesAndGroups: a server pod's requests seen by its own (ingress) proxy and
// again by a client's egress proxy on another node count once; the workload's pods on two nodes
// add exactly, histograms too; grouping by Service uses the lookup for rows Hubble named none.
func TestMergeHTTPDeduplicatesAndGroups(t *testing.T) {
	a := &isoobsv1.TopFrame{Node: "lab-node-a", HttpRows: []*isoobsv1.HTTPRow{
		httpProtoRow("lab-node-a", "coreapi-a", "ingress", false, 600, 22, 2e6, &isoobsv1.HTTPPathCount{Method: "GET", Path: "/jobs/{id}", Requests: 600, Status_5Xx: 22}),
	}}
	b := &isoobsv1.TopFrame{Node: "lab-node-b", HttpRows: []*isoobsv1.HTTPRow{
		httpProtoRow("lab-node-b", "coreapi-b", "ingress", false, 400, 15, 8e6, &isoobsv1.HTTPPathCount{Method: "GET", Path: "/jobs/{id}", Requests: 400, Status_5Xx: 15}),
		// The recruiter's 100 requests to coreapi-a, logged by its egress proxy on node b too.
		httpProtoRow("lab-node-b", "coreapi-a", "egress", false, 100, 0, 2e6),
		// Client rows are another view.
		httpProtoRow("lab-node-b", "recruiter-x", "egress", true, 100, 0, 2e6),
	}}
	services := func(ns string, labels map[string]string) string {
		if labels["app"] == "coreapi" {
			return ns + "/coreapi"
		}
		return ""
	}
	byPod := MergeHTTP([]*isoobsv1.TopFrame{a, b}, GroupByPod, false, services)
	if len(byPod.Rows) != 2 || byPod.Total.Requests != 1000 || byPod.Total.Status5xx != 37 || byPod.Total.Pods != 2 {
		t.Fatalf("by pod: %d rows, total %+v", len(byPod.Rows), byPod.Total)
	}
	for _, g := range []string{GroupByWorkload, GroupByService, GroupByNamespace} {
		f := MergeHTTP([]*isoobsv1.TopFrame{a, b}, g, false, services)
		if len(f.Rows) != 1 {
			t.Fatalf("%s: %d rows", g, len(f.Rows))
		}
		r := f.Rows[0]
		if r.Requests != 1000 || r.Status5xx != 37 || r.Pods != 2 || r.Node != "" || len(r.Paths) != 1 || r.Paths[0].Requests != 1000 || r.Paths[0].Status5xx != 37 {
			t.Errorf("%s: %+v", g, r)
		}
		if g == GroupByService && r.Service != "tenant-jobs/coreapi" {
			t.Errorf("service %q", r.Service)
		}
		// 600 at ~2 ms and 400 at ~8 ms: p50 in the 2 ms bucket, p95 and p99 in the 8 ms one.
		if r.LatencyP50Ms < 1.9 || r.LatencyP50Ms > 2.2 || r.LatencyP95Ms < 7.9 || r.LatencyP95Ms > 8.6 || r.LatencyP99Ms < 7.9 || r.LatencyP99Ms > 8.6 {
			t.Errorf("%s: p50 %.3f p95 %.3f p99 %.3f", g, r.LatencyP50Ms, r.LatencyP95Ms, r.LatencyP99Ms)
		}
	}
	clients := MergeHTTP([]*isoobsv1.TopFrame{a, b}, GroupByPod, true, services)
	if len(clients.Rows) != 1 || clients.Rows[0].Pod != "recruiter-x" || clients.Rows[0].Service != "" || clients.Side != "client" {
		t.Errorf("clients: %+v", clients.Rows)
	}
	sorted := byPod.SortedLimited(HTTPSortErrors, 1)
	if len(sorted.Rows) != 1 || sorted.Rows[0].Pod != "coreapi-a" || sorted.Truncated != 1 {
		t.Errorf("sorted by errors, limit 1: %+v (truncated %d)", sorted.Rows, sorted.Truncated)
	}
}

// TestMergeHTTPBoundsPaths: rows with 40 templates between them keep 32, the rest in "other".
func TestMergeHTTPBoundsPaths(t *testing.T) {
	var rows []*isoobsv1.HTTPRow
	for i := 0; i < 2; i++ {
		var paths []*isoobsv1.HTTPPathCount
		for j := 0; j < 20; j++ {
			paths = append(paths, &isoobsv1.HTTPPathCount{Method: "GET", Path: fmt.Sprintf("/p%d-%d", i, j), Requests: uint64(100 - j)})
		}
		rows = append(rows, httpProtoRow("n", fmt.Sprintf("pod-%d", i), "ingress", false, 1810, 0, 1e6, paths...))
		rows[i].PathsOther = &isoobsv1.HTTPPathCount{Method: "*", Path: "other", Requests: 0}
	}
	f := MergeHTTP([]*isoobsv1.TopFrame{{Node: "n", HttpRows: rows}}, GroupByWorkload, false, nil)
	r := f.Rows[0]
	var sum uint64
	for _, p := range r.Paths {
		sum += p.Requests
	}
	if len(r.Paths) != HTTPMaxPaths || sum+r.PathsOther.Requests != 3620 || r.PathsOther.Path != "other" || r.PathsOther.Requests != 2*(84+83+82+81) {
		t.Errorf("%d paths, %d + other %+v", len(r.Paths), sum, r.PathsOther)
	}
}

// Every JSON field of the top http frame is documented in docs/top-http-json.md (as `name` in a
// table row).
func TestHTTPJSONFieldsDocumented(t *testing.T) {
	checkJSONFieldsDocumented(t, "top-http-json.md", reflect.TypeOf(HTTPFrame{}))
}
