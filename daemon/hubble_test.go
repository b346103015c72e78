package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// withHubble gives a fixture a Hubble feed whose aggregator the test fills directly.
func withHubble(t *testing.T, f *fixture) *hubble.Aggregator {
	t.Helper()
	feed, err := newHubbleFeed(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.c.hub = feed
	return feed.agg
}

var (
	hubCrawlerA = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "crawler-7d9f-a", Workload: "crawler", WorkloadKind: "Deployment", Identity: 48213, Labels: map[string]string{"app": "crawler"}, IP: "10.0.1.5"}
	hubLoader   = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "loader-1", Workload: "loader", WorkloadKind: "Deployment", Identity: 48777, Labels: map[string]string{"app": "loader"}, IP: "10.0.2.9"}
	hubCoreDNS  = hubblereplay.Pod{Namespace: "kube-system", Name: "coredns-1", Workload: "coredns", WorkloadKind: "Deployment", Identity: 102, IP: "10.0.0.10"}
)

func observeDNS(agg *hubble.Aggregator, node string, client hubblereplay.Pod, name string, rcode uint32, lat time.Duration, denied bool, n int) {
	observeDNSAt(agg, time.Now(), node, client, name, rcode, lat, denied, n)
}

func observeDNSAt(agg *hubble.Aggregator, at time.Time, node string, client hubblereplay.Pod, name string, rcode uint32, lat time.Duration, denied bool, n int) {
	for range n {
		for _, fl := range (hubblereplay.DNSExchange{Node: node, Client: client, Server: hubCoreDNS, Query: name, Rcode: rcode, Latency: lat, Denied: denied}).Flows() {
			agg.ObserveAt(fl, at)
		}
	}
}

func srcs(r *isoobsv1.DNSRow) string {
	if r == nil {
		return "<no row>"
	}
	return strings.Join(r.Sources, ",")
}

// TestHubbleMerge: where both sources see a pod the probe's counts stand and Hubble adds
// identity, policy denials and proxy latency; a pod only Hubble sees is a row with
// sources=[hubble]; --source picks one side.
func TestHubbleMerge(t *testing.T) {
	f := newFixture(t, nil)
	agg := withHubble(t, f)
	f.c.tick(f.now)
	for range 10 {
		// The probe and Hubble see the same 100 queries of crawler-a per second.
		f.src.query(101, "api.example.com", 100, bpf.RcodeNoError, 300*time.Microsecond)
		observeDNS(agg, "node-a", hubCrawlerA, "api.example.com.", 0, 3*time.Millisecond, false, 100)
		// Hubble also reports 5 queries a second denied by policy.
		observeDNS(agg, "node-a", hubCrawlerA, "evil.example.net.", 0, 0, true, 5)
		// crawler-b: only the probe (no L7 policy selects it).
		f.src.query(201, "b.example.com", 20, bpf.RcodeNXDomain, time.Millisecond)
		// loader-1 on another node: only Hubble (through Relay).
		observeDNS(agg, "node-b", hubLoader, "kafka.example.com.", 0, time.Millisecond, false, 5)
		observeDNS(agg, "node-b", hubLoader, "nope.example.com.", 3, time.Millisecond, false, 2)
		f.step()
	}

	fr := f.frame(t, &isoobsv1.TopRequest{Window: isoobsv1.Window_WINDOW_10S, TopNames: 5})
	a, b, l := rowByPod(fr, "crawler-7d9f-a"), rowByPod(fr, "crawler-7d9f-b"), rowByPod(fr, "loader-1")
	if len(fr.Rows) != 3 || a == nil || b == nil || l == nil {
		t.Fatalf("rows %v", fr.Rows)
	}
	if a.Queries != 1000 || a.Responses != 1000 || a.Noerror != 1000 || a.Qps != 100 || a.PolicyDenied != 50 || a.PolicyDeniedRate != 5 || srcs(a) != "ebpf,hubble" || a.Identity != 48213 || a.PodUid != uidCrawler {
		t.Errorf("merged crawler-a: queries %d responses %d qps %v denied %d (%v/s) sources %s identity %d uid %s",
			a.Queries, a.Responses, a.Qps, a.PolicyDenied, a.PolicyDeniedRate, srcs(a), a.Identity, a.PodUid)
	}
	// Kernel latency and proxy latency stay apart: 300µs in [256, 512), 3ms in [2048, 4096) µs.
	if a.LatencyP99Ms >= 0.512 || a.ProxyLatencyP50Ms < 2.048 || a.ProxyLatencyP50Ms >= 4.096 {
		t.Errorf("crawler-a latency p99 %v proxy p50 %v", a.LatencyP99Ms, a.ProxyLatencyP50Ms)
	}
	if len(a.TopNames) != 1 || a.TopNames[0].Name != "api.example.com" || a.TopNames[0].Queries != 1000 {
		t.Errorf("crawler-a names (the probe's): %v", a.TopNames)
	}
	if b.Queries != 200 || srcs(b) != "ebpf" || b.PolicyDenied != 0 || b.Identity != 0 {
		t.Errorf("crawler-b: %v", b)
	}
	if l.Queries != 70 || l.Responses != 70 || l.Nxdomain != 20 || l.Noerror != 50 || l.Qps != 7 || srcs(l) != "hubble" || l.Identity != 48777 ||
		l.Node != "node-b" || l.Workload != "loader" || l.WorkloadKind != "Deployment" || l.Labels["app"] != "loader" || l.LatencyP50Ms != 0 || l.ProxyLatencyP50Ms == 0 {
		t.Errorf("hubble-only loader: %v", l)
	}
	if len(l.TopNames) != 2 || l.TopNames[0].Name != "kafka.example.com" || l.TopNames[0].Queries != 50 || l.TopNames[1].Nxdomain != 20 {
		t.Errorf("loader names %v", l.TopNames)
	}
	if fr.Total.Queries != 1270 || fr.Total.PolicyDenied != 50 || srcs(fr.Total) != "ebpf,hubble" {
		t.Errorf("total queries %d denied %d sources %s", fr.Total.Queries, fr.Total.PolicyDenied, srcs(fr.Total))
	}
	if len(fr.TopNames) != 4 || fr.TopNames[0].Name != "api.example.com" || fr.TopNames[0].Queries != 1000 {
		t.Errorf("frame names %v", fr.TopNames)
	}

	// The probe alone.
	fe := f.frame(t, &isoobsv1.TopRequest{Source: isoobsv1.Source_SOURCE_EBPF})
	if ea := rowByPod(fe, "crawler-7d9f-a"); len(fe.Rows) != 2 || ea == nil || ea.Queries != 1000 || ea.PolicyDenied != 0 || srcs(ea) != "ebpf" || ea.Identity != 0 {
		t.Errorf("--source ebpf: %v", fe.Rows)
	}
	// Hubble alone: its own counts, denied queries included.
	fh := f.frame(t, &isoobsv1.TopRequest{Source: isoobsv1.Source_SOURCE_HUBBLE})
	ha := rowByPod(fh, "crawler-7d9f-a")
	if len(fh.Rows) != 2 || ha == nil || ha.Queries != 1050 || ha.Responses != 1000 || ha.PolicyDenied != 50 || srcs(ha) != "hubble" || rowByPod(fh, "loader-1") == nil {
		t.Errorf("--source hubble: %v", fh.Rows)
	}
	if fh.Total.Queries != 1120 {
		t.Errorf("--source hubble total %d", fh.Total.Queries)
	}

	// By workload: the crawler workload sums its pods once each.
	fw := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, Namespace: "tenant-jobs"})
	if len(fw.Rows) != 2 || fw.Rows[0].Workload != "crawler" || fw.Rows[0].Queries != 1200 || fw.Rows[0].PolicyDenied != 50 || fw.Rows[0].Pods != 2 ||
		fw.Rows[1].Workload != "loader" || fw.Rows[1].Queries != 70 {
		t.Errorf("by workload: %v", fw.Rows)
	}
	// Label selectors reach Hubble-only pods through Hubble's k8s: labels.
	if fl := f.frame(t, &isoobsv1.TopRequest{LabelSelector: "app=loader"}); len(fl.Rows) != 1 || fl.Rows[0].Pod != "loader-1" {
		t.Errorf("app=loader: %v", fl.Rows)
	}
	// Query names across both sources, counted once.
	fq := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME})
	for _, r := range fq.Rows {
		want := map[string]uint64{"api.example.com": 1000, "b.example.com": 200, "kafka.example.com": 50, "nope.example.com": 20}[r.Qname]
		if r.Queries != want {
			t.Errorf("qname %s: %d queries, want %d (sources %s)", r.Qname, r.Queries, want, srcs(r))
		}
	}
	if len(fq.Rows) != 4 {
		t.Errorf("qname rows %v", fq.Rows)
	}
}

// A stream counting since its start sees only Hubble flows after it, and Hubble subjects are
// forgotten with the aggregator after the retention window.
func TestHubbleSinceStreamStartAndForget(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Retention = 20 * time.Second })
	agg := withHubble(t, f)
	f.c.tick(f.now)
	observeDNSAt(agg, f.now, "node-b", hubLoader, "a.example.com.", 0, time.Millisecond, false, 30)
	f.step()
	q, err := newTopQuery(&isoobsv1.TopRequest{SinceStreamStart: true}, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.c.startStream(q)
	observeDNSAt(agg, f.now, "node-b", hubLoader, "b.example.com.", 0, time.Millisecond, false, 4)
	f.step()
	fr := f.c.frame(q)
	if l := rowByPod(fr, "loader-1"); l == nil || l.Queries != 4 || len(l.TopNames) != 1 || l.TopNames[0].Name != "b.example.com" {
		t.Errorf("since stream start: %v", fr.Rows)
	}
	// No more flows: after the retention window the pod is gone, in both places.
	for range 40 {
		f.step()
	}
	if _, ok := agg.Pod(hubble.PodKey{Namespace: "tenant-jobs", Pod: "loader-1"}); ok || len(f.c.hub.subjects) != 0 || f.c.subjects["hubble:tenant-jobs/loader-1"] != nil {
		t.Errorf("loader not forgotten: %d hubble subjects", len(f.c.hub.subjects))
	}
	// It comes back: counted from zero, not twice.
	observeDNSAt(agg, f.now, "node-b", hubLoader, "c.example.com.", 0, time.Millisecond, false, 3)
	f.step()
	if l := rowByPod(f.frame(t, &isoobsv1.TopRequest{}), "loader-1"); l == nil || l.Queries != 3 {
		t.Errorf("loader back: %v", l)
	}
}
