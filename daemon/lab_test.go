package daemon_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// TestDaemonInLab runs the daemon for one node of the lab (real kube-apiserver, kwok node,
// pods with kubelet-named cgroups and network namespaces, real CoreDNS) and checks that a
// Deployment's pod is shown by name, namespace, labels and owning Deployment, with exactly the
// queries a DNS client in that pod sent and got answered.
func TestDaemonInLab(t *testing.T) {
	const node = "lab-node-a"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab, crawler, bin := labWithCrawler(t, ctx, node)

	d, err := daemon.New(daemon.Config{NodeName: node, CgroupRoot: lab.Node(node).CgroupRoot(), RESTConfig: lab.RESTConfig(), Interval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	client := inProcessClient(t, d)
	// Wait for the pod list before traffic so the first frames already carry names.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := client.Status(ctx, &isoobsv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.KubernetesConnected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never connected to the lab's API server: %s", st.KubernetesError)
		}
		time.Sleep(100 * time.Millisecond)
	}

	stream, err := client.Top(ctx, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, Namespace: "tenant-jobs", TopNames: 5})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := dnsgen.RunInPod(ctx, crawler, bin, dnsgen.Config{
		Server: netip.AddrPortFrom(lab.DNSServiceIP, 53),
		Names:  []string{"kubernetes.default.svc.cluster.local", "nope.tenant-jobs.svc.cluster.local"},
		Count:  300, Concurrency: 4, PerName: true, Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Answered != rep.Sent || rep.Sent != 300 {
		t.Fatalf("dnsgen: sent %d answered %d (timeouts %d): the lab's DNS path is broken", rep.Sent, rep.Answered, rep.Timeouts)
	}
	f := waitFrame(t, stream, 80, func(f *isoobsv1.TopFrame) bool { return f.Total.GetResponses() >= rep.Answered })
	if len(f.Rows) != 1 {
		t.Fatalf("rows in tenant-jobs by workload: %v", f.Rows)
	}
	r := f.Rows[0]
	if r.Namespace != "tenant-jobs" || r.Workload != "crawler" || r.WorkloadKind != "Deployment" || r.Pods != 1 || r.Node != node {
		t.Errorf("workload row identity: ns %q workload %s/%s pods %d node %q", r.Namespace, r.WorkloadKind, r.Workload, r.Pods, r.Node)
	}
	if r.Queries != rep.Sent || r.Responses != rep.Answered || r.Noerror != rep.RCodes.NoError || r.Nxdomain != rep.RCodes.NXDomain || r.Servfail != rep.RCodes.ServFail {
		t.Errorf("workload row counts: q %d r %d noerror %d nx %d servfail %d; client sent %d answered %d rcodes %+v",
			r.Queries, r.Responses, r.Noerror, r.Nxdomain, r.Servfail, rep.Sent, rep.Answered, rep.RCodes)
	}
	for _, n := range r.TopNames {
		want, ok := rep.Names[n.Name]
		if !ok { // dnsgen may key names in absolute form
			want, ok = rep.Names[n.Name+"."]
		}
		if !ok || n.Queries != want.Sent || n.Nxdomain != want.RCodes.NXDomain || n.Error != 0 {
			t.Errorf("name %v, client: %+v", n, want)
		}
	}
	if len(r.TopNames) != 2 {
		t.Errorf("top names %v", r.TopNames)
	}

	// By pod: the row carries the pod's name, UID, labels and cgroup.
	podStream, err := client.Top(ctx, &isoobsv1.TopRequest{LabelSelector: "app=crawler"})
	if err != nil {
		t.Fatal(err)
	}
	pf, err := podStream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(pf.Rows) != 1 {
		t.Fatalf("pod rows for app=crawler: %v", pf.Rows)
	}
	pr := pf.Rows[0]
	if pr.Pod != crawler.Name || pr.PodUid != string(crawler.UID) || pr.Labels["app"] != "crawler" || pr.Queries != rep.Sent {
		t.Errorf("pod row: %v (pod %s uid %s)", pr, crawler.Name, crawler.UID)
	}
	t.Logf("crawler: %d queries, p50 %.3f ms p99 %.3f ms (client p50 %.0f µs p99 %.0f µs)", pr.Queries, pr.LatencyP50Ms, pr.LatencyP99Ms, rep.Latency.P50Micros, rep.Latency.P99Micros)

	// CoreDNS runs on this node too: its row counts the queries it served.
	all, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "kube-system"})
	if err != nil {
		t.Fatal(err)
	}
	kf, err := all.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var served uint64
	for _, row := range kf.Rows {
		served += row.ServedQueries
	}
	if served < rep.Sent {
		t.Errorf("kube-system rows served %d queries, want at least the %d the crawler sent: %v", served, rep.Sent, kf.Rows)
	}
}

// labWithCrawler starts a one-node lab with a tenant-jobs/crawler Deployment
// and returns the lab, the crawler's node-side pod and a built dnsgen binary.
func labWithCrawler(t *testing.T, ctx context.Context, node string) (*testlab.Lab, *podnet.Pod, string) {
	t.Helper()
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{node}})
	if err := lab.Apply(ctx, testlab.NewDeployment("tenant-jobs", "crawler", 1)); err != nil {
		t.Fatal(err)
	}
	pods, err := lab.WaitPodsReady(ctx, "tenant-jobs", "app=crawler", 1)
	if err != nil {
		t.Fatal(err)
	}
	crawler := lab.Pod("tenant-jobs", pods[0].Name)
	if crawler == nil {
		t.Fatalf("pod %s not adopted by the lab", pods[0].Name)
	}
	bin, err := dnsgen.BuildBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return lab, crawler, bin
}
