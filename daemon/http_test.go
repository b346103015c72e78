package daemon

import (
	"fmt"
	"testing"
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
	"github.com/isoobs/isoobs/topspec"
)

var (
	httpServer = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "coreapi-7d4f9c8b6-a", Workload: "coreapi", WorkloadKind: "Deployment",
		Identity: 48999, Labels: map[string]string{"app": "coreapi"}, IP: "10.244.1.30"}
	httpClient = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "crawler-5fd66fc4f9-kc4k2", Workload: "crawler", WorkloadKind: "Deployment",
		Identity: 48213, Labels: map[string]string{"app": "crawler"}, IP: "10.244.1.17"}
)

func newTestHTTPAgg() *httpAgg {
	return newHTTPAgg(&Config{MaxTrackedPods: 16, Retention: time.Hour})
}

// TestHTTPAggCountsProxyRecords feeds 1,000 requests shaped as Cilium's proxy logs them (37
// answered 5xx, 74 4xx of which 18 denied by policy, latencies 200 µs + 37 µs·k for k = 0..999)
// and checks the server and client rows exactly, the percentiles within the histogram's bucket
// (≤ 12.5%), and that the paths are templated and sum to the requests.
func TestHTTPAggCountsProxyRecords(t *testing.T) {
	a := newTestHTTPAgg()
	t0 := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	var want5xx, want4xx, wantDenied int
	for i := 0; i < 1000; i++ {
		x := hubblereplay.HTTPRequest{Node: "lab-node-a", Time: t0.Add(time.Duration(i) * time.Millisecond), Client: httpClient, Server: httpServer,
			ClientPort: uint32(40000 + i), Code: 200, Latency: time.Duration(200+37*((i*7919)%1000)) * time.Microsecond}
		switch {
		case i%27 == 0 && i < 999:
			x.Code = 503
			want5xx++
		case i%27 == 13 && (i/27)%2 == 1:
			x.Denied = true
			want4xx++
			wantDenied++
		case i%27 == 13 || i%27 == 14:
			x.Code = 404
			want4xx++
		}
		switch i % 3 {
		case 0:
			x.URL = fmt.Sprintf("http://coreapi.tenant-jobs:8080/applicants/%d?page=2", i)
		case 1:
			x.Method, x.URL = "POST", "http://coreapi.tenant-jobs:8080/applicants"
		default:
			x.URL = fmt.Sprintf("http://coreapi.tenant-jobs:8080/jobs/%08x-1234-4abc-8def-%012x/apply", i, i)
		}
		for _, f := range x.Flows() {
			a.observe(f)
		}
	}
	if want5xx != 37 || want4xx != 74 || wantDenied != 18 {
		t.Fatalf("test set: %d 5xx, %d 4xx, %d denied; want 37, 74, 18", want5xx, want4xx, wantDenied)
	}
	cur, untracked := a.snapshot()
	if untracked != 0 || len(cur) != 2 {
		t.Fatalf("%d rows, %d untracked; want 2 (server and client, ingress)", len(cur), untracked)
	}
	q, err := newHTTPQuery(&isoobsv1.TopRequest{}, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, st := range cur {
		r := httpRow(k, st, nil, nil, 0)
		if r.Direction != "ingress" || r.Requests != 1000 || r.Responses != 1000 || r.Status_5Xx != 37 || r.Status_4Xx != 74 ||
			r.Status_2Xx != 889 || r.Denied != 18 || r.ResponsesWithoutLatency != 0 {
			t.Errorf("row %v: %+v", k, r)
		}
		if q.matches(k, st) == k.client {
			t.Errorf("row %v: a server-side query matches it: %v", k, q.matches(k, st))
		}
		if !k.client && (r.Pod != httpServer.Name || r.Workload != "coreapi" || r.Identity != 48999 || r.Labels["app"] != "coreapi") {
			t.Errorf("server row identity: %+v", r)
		}
		// The known latency set: nearest-rank p50/p95/p99 are k = 499, 949, 989.
		for _, c := range []struct {
			got  float64
			rank int
		}{{r.LatencyP50Ms, 500}, {r.LatencyP95Ms, 950}, {r.LatencyP99Ms, 990}} {
			trueUS := float64(200 + 37*(c.rank-1))
			b := topspec.HTTPLatencyBucket(uint64(trueUS * 1000))
			lo, hi := topspec.HTTPLatencyBounds(b)
			if c.got*1000 < lo || c.got*1000 >= hi || (hi-lo) > lo/8 {
				t.Errorf("rank %d: %.3f ms, true %.3f ms: not in its bucket [%.0f, %.0f) µs", c.rank, c.got, trueUS/1000, lo, hi)
			}
		}
		paths := map[string]uint64{}
		var sum uint64
		for _, p := range r.Paths {
			paths[p.Method+" "+p.Path] = p.Requests
			sum += p.Requests
		}
		if len(r.Paths) != 3 || paths["GET /applicants/{id}"] != 334 || paths["POST /applicants"] != 333 || paths["GET /jobs/{uuid}/apply"] != 333 || sum != 1000 || r.PathsOther != nil {
			t.Errorf("paths %v (other %v)", paths, r.PathsOther)
		}
	}
}

// TestHTTPAggBoundsPaths: 40 distinct templates on one row keep 32 named, and the other 8
// templates' requests are counted in "other", exactly.
func TestHTTPAggBoundsPaths(t *testing.T) {
	a := newTestHTTPAgg()
	t0 := time.Now()
	for i := 0; i < 400; i++ {
		x := hubblereplay.HTTPRequest{Node: "n", Time: t0, Client: httpClient, Server: httpServer, Code: 500, Latency: time.Millisecond,
			URL: fmt.Sprintf("http://coreapi/report-%c%c", 'a'+(i%40)/26, 'a'+(i%40)%26)}
		for _, f := range x.Flows() {
			a.observe(f)
		}
	}
	cur, _ := a.snapshot()
	for k, st := range cur {
		r := httpRow(k, st, nil, nil, 0)
		var sum uint64
		for _, p := range r.Paths {
			sum += p.Requests
		}
		if len(r.Paths) != httpMaxPathsPerRow || r.PathsOther.GetRequests() != 80 || r.PathsOther.GetStatus_5Xx() != 80 || sum+r.PathsOther.GetRequests() != 400 {
			t.Errorf("%v: %d paths summing to %d, other %v", k, len(r.Paths), sum, r.PathsOther)
		}
	}
}

// TestHTTPRowSinceBaseline: a since-stream-start row subtracts the totals at the stream's start,
// paths and the latency histogram included; rates are over the interval since the last frame.
func TestHTTPRowSinceBaseline(t *testing.T) {
	a := newTestHTTPAgg()
	t0 := time.Now()
	send := func(n int, code uint32) {
		for i := 0; i < n; i++ {
			x := hubblereplay.HTTPRequest{Node: "n", Time: t0, Client: httpClient, Server: httpServer, Code: code, Latency: 3 * time.Millisecond, URL: "http://coreapi/jobs/17"}
			for _, f := range x.Flows() {
				a.observe(f)
			}
		}
	}
	send(50, 200)
	base, _ := a.snapshot()
	send(20, 503)
	cur, _ := a.snapshot()
	for k, st := range cur {
		r := httpRow(k, st, base[k], base[k], 2)
		if r.Requests != 20 || r.Status_5Xx != 20 || r.Status_2Xx != 0 || r.RequestsPerSecond != 10 || r.Status_5XxPerSecond != 10 ||
			len(r.Paths) != 1 || r.Paths[0].Requests != 20 || r.Paths[0].Path != "/jobs/{id}" || len(r.LatencyCounts) != 1 || r.LatencyCounts[0] != 20 {
			t.Errorf("%v: %+v", k, r)
		}
	}
}

func TestHTTPPathTemplate(t *testing.T) {
	for in, want := range map[string]string{
		"http://coreapi.tenant-jobs:8080/applicants/123?x=1":             "/applicants/{id}",
		"http://coreapi/jobs/3f2b8c1e-1234-4abc-8def-0123456789ab/apply": "/jobs/{uuid}/apply",
		"http://coreapi/blobs/deadbeef00112233":                          "/blobs/{hex}",
		"http://coreapi/":                                                "/",
		"http://coreapi":                                                 "/",
		"/plain/7":                                                       "/plain/{id}",
		"http://coreapi/a/b/c/d/e/f/g/h/i/j":                             "/a/b/c/d/e/f/g/h/…",
		"http://coreapi/caf%C3%A9":                                       "/caf%C3%A9",
		"http://coreapi/x/" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa": "/x/{long}",
		"http://coreapi/deadbeefdeadbeef":                                          "/deadbeefdeadbeef",
	} {
		if got := httpPathTemplate(in); got != want {
			t.Errorf("httpPathTemplate(%q) = %q, want %q", in, got, want)
		}
	}
	if httpMethod("GET") != "GET" || httpMethod("FOO\x1b") != "OTHER" {
		t.Error("httpMethod")
	}
}
