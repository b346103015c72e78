package top

import (
	"testing"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Two nodes: a client per node, a CoreDNS replica per node, and a Service IP no pod carries.
func serverFrames() []*isoobsv1.TopFrame {
	hist := func(bucket int, n uint64) []uint64 {
		h := make([]uint64, 32)
		h[bucket] = n
		return h
	}
	return []*isoobsv1.TopFrame{
		{Node: "n1", Rows: []*isoobsv1.DNSRow{
			{Namespace: "app", Pod: "web", PodUid: "u-web", Queries: 100, Qps: 10, Responses: 98, Servers: []*isoobsv1.DNSServer{
				{Address: "10.0.0.5", Queries: 60, Answers: 60, Nxdomain: 5, Timed: 60, LatencySumUs: 60 * 1000},
				{Address: "10.96.0.10", Queries: 40, Answers: 38, Servfail: 2, Timed: 38, LatencySumUs: 38 * 2000},
			}},
			{Namespace: "kube-system", Pod: "coredns-a", PodUid: "u-a", ServedQueries: 70, ServedResponses: 70, ServedServfail: 1,
				PodIps: []string{"10.0.0.5"}, ServedLatencyLog2Us: hist(8, 70)},
		}},
		{Node: "n2", Rows: []*isoobsv1.DNSRow{
			{Namespace: "app", Pod: "api", PodUid: "u-api", Queries: 30, Qps: 3, Responses: 30, Servers: []*isoobsv1.DNSServer{
				{Address: "10.0.0.6", Queries: 30, Answers: 30, Timed: 30, LatencySumUs: 30 * 50000},
			}},
			{Namespace: "kube-system", Pod: "coredns-b", PodUid: "u-b", ServedQueries: 30, ServedResponses: 30,
				PodIps: []string{"10.0.0.6"}, ServedLatencyLog2Us: hist(15, 30)},
		}},
	}
}

func TestGroupByServer(t *testing.T) {
	f := Merge(serverFrames(), MergeOptions{GroupBy: GroupByServer})
	by := map[string]Row{}
	for _, r := range f.Rows {
		by[r.Server] = r
	}
	if len(by) != 3 {
		t.Fatalf("server rows %+v, want 10.0.0.5, 10.96.0.10 and 10.0.0.6", f.Rows)
	}
	a, svc, b := by["10.0.0.5"], by["10.96.0.10"], by["10.0.0.6"]
	if a.Pod != "coredns-a" || a.Node != "n1" || a.Pods != 1 || a.Queries != 60 || a.NXDomain != 5 || a.ServedQueries != 70 || a.ServedServFail != 1 || a.Share != 60.0/130 {
		t.Errorf("coredns-a's row: %+v", a)
	}
	if a.LatencyAvgMs != 1 || a.ServedLatencyP50Ms >= 1 {
		t.Errorf("coredns-a: clients' mean %.2f ms (want 1), own p50 %.3f ms (want below 1)", a.LatencyAvgMs, a.ServedLatencyP50Ms)
	}
	if svc.Pod != "" || svc.Queries != 40 || svc.Responses != 38 || svc.ServFail != 2 || svc.ServedQueries != 0 || svc.QPS != 4 {
		t.Errorf("the Service IP's row: %+v", svc)
	}
	if b.Pod != "coredns-b" || b.LatencyAvgMs != 50 || b.ServedLatencyP50Ms < 32 || b.QPS != 3 {
		t.Errorf("coredns-b's row (the slow one): mean %.1f ms, own p50 %.1f ms, qps %.1f: %+v", b.LatencyAvgMs, b.ServedLatencyP50Ms, b.QPS, b)
	}
}

func TestServersNamedAndFiltered(t *testing.T) {
	f := Merge(serverFrames(), MergeOptions{GroupBy: GroupByPod})
	for _, r := range f.Rows {
		if r.Pod != "web" {
			continue
		}
		if len(r.Servers) != 2 || r.Servers[0].Name != "kube-system/coredns-a" || r.Servers[1].Name != "" || r.Servers[0].Share != 0.6 || r.Servers[1].LatencyAvgMs != 2 {
			t.Errorf("web's servers: %+v", r.Servers)
		}
	}
	for want, pods := range map[string][]string{"coredns-b": {"api"}, "kube-system/coredns-a": {"web"}, "10.96.0.10": {"web"}, "10.0.0.6:53": {"api"}, "nowhere": nil} {
		g := Merge(serverFrames(), MergeOptions{GroupBy: GroupByPod, Server: want})
		var got []string
		for _, r := range g.Rows {
			got = append(got, r.Pod)
		}
		if len(got) != len(pods) || (len(got) == 1 && got[0] != pods[0]) || g.ServerFilter != want {
			t.Errorf("--server %s kept %v, want %v", want, got, pods)
		}
	}
	g := Merge(serverFrames(), MergeOptions{GroupBy: GroupByServer, Server: "coredns-b"})
	if len(g.Rows) != 1 || g.Rows[0].Server != "10.0.0.6" {
		t.Errorf("--group-by server --server coredns-b: %+v", g.Rows)
	}
}
