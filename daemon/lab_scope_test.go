package daemon_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// TestNameFilterAndLookBackInLab runs the daemon on a lab node (real API server, pods in
// network namespaces with kubelet-named cgroups, real CoreDNS) with two pods of one Deployment:
//   - look-back: a flood that ended before the stream opened is shown under since with exactly
//     the queries each pod sent, first/last seen around it;
//   - name filter: streams opened with --zone and --name count exactly the queries for matching
//     names each pod then sends, none of the others, and a pod that asked none is no row.
func TestNameFilterAndLookBackInLab(t *testing.T) {
	const node = "lab-node-a"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{node}})
	if err := lab.Apply(ctx, testlab.NewDeployment("tenant-jobs", "crawler", 2)); err != nil {
		t.Fatal(err)
	}
	kpods, err := lab.WaitPodsReady(ctx, "tenant-jobs", "app=crawler", 2)
	if err != nil {
		t.Fatal(err)
	}
	a, b := lab.Pod("tenant-jobs", kpods[0].Name), lab.Pod("tenant-jobs", kpods[1].Name)
	if a == nil || b == nil {
		t.Fatal("crawler pods not adopted by the lab")
	}
	bin, err := dnsgen.BuildBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const interval = 250 * time.Millisecond
	d, err := daemon.New(daemon.Config{NodeName: node, CgroupRoot: lab.Node(node).CgroupRoot(), RESTConfig: lab.RESTConfig(), Interval: interval})
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
	testlab.WaitFor(t, 30*time.Second, func() error {
		st, err := client.Status(ctx, &isoobsv1.StatusRequest{})
		if err != nil {
			return err
		}
		if !st.KubernetesConnected {
			return errNotYet(st.KubernetesError)
		}
		return nil
	})
	send := func(p *podnet.Pod, count uint64, names ...string) *dnsgen.Report {
		t.Helper()
		rep, err := dnsgen.RunInPod(ctx, p, bin, dnsgen.Config{Server: netip.AddrPortFrom(lab.DNSServiceIP, 53), Names: names,
			Count: int64(count), Concurrency: 4, PerName: true, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Sent != count || rep.Answered != count {
			t.Fatalf("dnsgen in %s: sent %d answered %d of %d: the lab's DNS path is broken", p.Name, rep.Sent, rep.Answered, count)
		}
		return rep
	}
	sent := func(rep *dnsgen.Report, name string) uint64 {
		if n := rep.Names[name]; n != nil {
			return n.Sent
		}
		if n := rep.Names[name+"."]; n != nil {
			return n.Sent
		}
		return 0
	}

	// 1. The flood, then quiet: counted by a plain stream, which is closed before look-back.
	floodStart := time.Now()
	floodA := send(a, 600, "a1.flood.example", "a2.flood.example")
	floodB := send(b, 150, "kubernetes.default.svc.cluster.local")
	floodEnd := time.Now()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watch, err := client.Top(watchCtx, &isoobsv1.TopRequest{Namespace: "tenant-jobs"})
	if err != nil {
		t.Fatal(err)
	}
	waitFrame(t, watch, 80, func(f *isoobsv1.TopFrame) bool { return f.Total.GetQueries() >= floodA.Sent+floodB.Sent })
	stopWatch()
	// Two more ticks of quiet, then look back.
	quiet, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := quiet.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	look, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs", Since: durationpb.New(time.Minute), TopNames: 3})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := look.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		pod *podnet.Pod
		rep *dnsgen.Report
	}{{a, floodA}, {b, floodB}} {
		r := rowByUID(lf, string(want.pod.UID))
		if r == nil {
			t.Fatalf("look-back 1m: no row for %s: %v", want.pod.Name, lf.Rows)
		}
		if r.Queries != want.rep.Sent || r.Responses != want.rep.Answered || r.Nxdomain != want.rep.RCodes.NXDomain || r.Noerror != want.rep.RCodes.NoError {
			t.Errorf("look-back 1m, %s: queries %d responses %d nx %d noerror %d; sent %d answered %d rcodes %+v",
				want.pod.Name, r.Queries, r.Responses, r.Nxdomain, r.Noerror, want.rep.Sent, want.rep.Answered, want.rep.RCodes)
		}
		first, last := r.FirstSeen.AsTime(), r.LastSeen.AsTime()
		if first.Before(floodStart.Add(-2*interval)) || last.After(floodEnd.Add(2*interval)) || last.Before(first) {
			t.Errorf("look-back 1m, %s: seen %s..%s, flood %s..%s", want.pod.Name, first.Format(time.StampMilli), last.Format(time.StampMilli),
				floodStart.Format(time.StampMilli), floodEnd.Format(time.StampMilli))
		}
		t.Logf("look-back 1m, %s: %d queries (%d nxdomain), seen %s..%s (flood %s..%s)", want.pod.Name, r.Queries, r.Nxdomain,
			first.Format(time.StampMilli), last.Format(time.StampMilli), floodStart.Format(time.StampMilli), floodEnd.Format(time.StampMilli))
	}

	// 2. Name filters, opened before the traffic they count.
	zone, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs", Zone: "filter.example", TopNames: 5})
	if err != nil {
		t.Fatal(err)
	}
	regex, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs", NameRegex: `^kubernetes\.default\.`, GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD})
	if err != nil {
		t.Fatal(err)
	}
	// Each stream's first frame: the filter is in place (the stream has started) before traffic.
	for _, s := range []isoobsv1.Daemon_TopClient{zone, regex} {
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	repA := send(a, 500, "x.filter.example", "kubernetes.default.svc.cluster.local", "other.example")
	repB := send(b, 300, "y.z.filter.example", "notfilter.example")
	wantA, wantB := sent(repA, "x.filter.example"), sent(repB, "y.z.filter.example")
	if wantA == 0 || wantB == 0 || wantA == repA.Sent || wantB == repB.Sent {
		t.Fatalf("dnsgen per-name counts: %v %v", repA.Names, repB.Names)
	}
	zf := waitFrame(t, zone, 80, func(f *isoobsv1.TopFrame) bool { return f.Total.GetQueries() >= wantA+wantB })
	if len(zf.Rows) != 2 || zf.Total.Queries != wantA+wantB {
		t.Fatalf("zone filter.example: total %d rows %v, want %d in 2 rows", zf.Total.Queries, zf.Rows, wantA+wantB)
	}
	for _, want := range []struct {
		pod  *podnet.Pod
		n    uint64
		name string
	}{{a, wantA, "x.filter.example"}, {b, wantB, "y.z.filter.example"}} {
		r := rowByUID(zf, string(want.pod.UID))
		if r == nil || r.Queries != want.n || r.Nxdomain != want.n || len(r.TopNames) != 1 || r.TopNames[0].Name != want.name || r.TopNames[0].Queries != want.n {
			t.Errorf("zone filter.example, %s: row %v, want %d queries (all NXDOMAIN) of %s", want.pod.Name, r, want.n, want.name)
		}
	}
	if zf.Since.AsTime().After(floodEnd.Add(time.Minute)) || zf.NameOverflow != 0 {
		t.Errorf("zone frame since %v overflow %d", zf.Since.AsTime(), zf.NameOverflow)
	}
	wantK := sent(repA, "kubernetes.default.svc.cluster.local")
	rf := waitFrame(t, regex, 80, func(f *isoobsv1.TopFrame) bool { return f.Total.GetQueries() >= wantK })
	if len(rf.Rows) != 1 || rf.Rows[0].Workload != "crawler" || rf.Rows[0].Queries != wantK || rf.Rows[0].Pods != 1 || rf.Rows[0].Nxdomain != 0 {
		t.Errorf("regex ^kubernetes\\.default\\. by workload: rows %v, want crawler with %d queries from one pod", rf.Rows, wantK)
	}
	t.Logf("filters: zone filter.example %s=%d %s=%d (of %d and %d sent); regex: %d of pod a's %d", a.Name, wantA, b.Name, wantB, repA.Sent, repB.Sent, wantK, repA.Sent)
}

type errNotYet string

func (e errNotYet) Error() string { return "not yet: " + string(e) }
