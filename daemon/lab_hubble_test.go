package daemon_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// hubblePeer is the replay Hubble server on a unix socket, restartable on the same path.
type hubblePeer struct {
	t    *testing.T
	sock string
	srv  *hubblereplay.Server
	gs   *grpc.Server
}

func (h *hubblePeer) start(node string) {
	h.t.Helper()
	_ = os.Remove(h.sock)
	lis, err := net.Listen("unix", h.sock)
	if err != nil {
		h.t.Fatal(err)
	}
	h.srv = hubblereplay.NewServer(hubblereplay.Options{NodeName: node})
	h.gs = grpc.NewServer()
	h.srv.Register(h.gs)
	go func() { _ = h.gs.Serve(lis) }()
}

func (h *hubblePeer) stop() {
	if h.gs != nil {
		h.gs.Stop()
		h.gs = nil
	}
}

// queryFlows describes, as Hubble's DNS proxy would, the queries a dnsgen run sent: per name,
// as many requests as were sent and responses with the rcodes the client got.
func queryFlows(node string, client, server hubblereplay.Pod, rep *dnsgen.Report) []*flowpb.Flow {
	var flows []*flowpb.Flow
	now := time.Now()
	port := uint32(40000)
	for name, st := range rep.Names {
		fq := name
		if !strings.HasSuffix(fq, ".") {
			fq += "."
		}
		for i := uint64(0); i < st.Sent; i++ {
			rcode := uint32(0)
			if i < st.RCodes.NXDomain {
				rcode = 3
			}
			port++
			flows = append(flows, hubblereplay.DNSExchange{Node: node, Time: now, Client: client, Server: server, ClientPort: port, Query: fq, Rcode: rcode, Latency: 700 * time.Microsecond}.Flows()...)
		}
	}
	return flows
}

func hubbleStatus(t *testing.T, ctx context.Context, c isoobsv1.DaemonClient) *isoobsv1.HubbleStatus {
	t.Helper()
	st, err := c.Status(ctx, &isoobsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetHubble()
}

func waitHubble(t *testing.T, ctx context.Context, c isoobsv1.DaemonClient, what string, ok func(*isoobsv1.HubbleStatus) bool) *isoobsv1.HubbleStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		hs := hubbleStatus(t, ctx, c)
		if ok(hs) {
			return hs
		}
		if time.Now().After(deadline) {
			t.Fatalf("hubble status never %s: %v", what, hs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDaemonHubbleInLab runs the daemon with the real eBPF probe in the lab (real API server,
// kwok node, CoreDNS, dnsgen in a pod) and a Hubble peer speaking the real observer API that
// reports the same queries: the merged row counts them once; Hubble adds identity and policy
// denials; a pod only Hubble sees is a row; malformed flows and lost events show in Status;
// Hubble going away costs no probe counts and the daemon reconnects when it returns.
func TestDaemonHubbleInLab(t *testing.T) {
	const node = "lab-node-h"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab, crawler, bin := labWithCrawler(t, ctx, node)

	dir, err := os.MkdirTemp("", "isoobs-hubble")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	peer := &hubblePeer{t: t, sock: filepath.Join(dir, "hubble.sock")}
	peer.start(node)
	t.Cleanup(peer.stop)

	d, err := daemon.New(daemon.Config{
		NodeName: node, CgroupRoot: lab.Node(node).CgroupRoot(), RESTConfig: lab.RESTConfig(), Interval: 250 * time.Millisecond,
		Hubble: hubble.ClientConfig{Server: "unix://" + peer.sock, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
	})
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := client.Status(ctx, &isoobsv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.KubernetesConnected && st.GetHubble().GetConnected() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not connected: kubernetes %q hubble %v", st.KubernetesError, st.GetHubble())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Real DNS traffic from the crawler pod through CoreDNS.
	gen := dnsgen.Config{
		Server: netip.AddrPortFrom(lab.DNSServiceIP, 53),
		Names:  []string{"kubernetes.default.svc.cluster.local", "nope.tenant-jobs.svc.cluster.local"},
		Count:  300, Concurrency: 4, PerName: true, Timeout: 2 * time.Second,
	}
	rep, err := dnsgen.RunInPod(ctx, crawler, bin, gen)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Answered != rep.Sent || rep.Sent != 300 || rep.RCodes.NXDomain == 0 {
		t.Fatalf("dnsgen: sent %d answered %d rcodes %+v: the lab's DNS path is broken", rep.Sent, rep.Answered, rep.RCodes)
	}

	// Hubble reports the same queries, 12 denied by policy, a pod on another node it alone
	// sees, malformed flows and a lost-events notice.
	hubCrawler := hubblereplay.Pod{Namespace: "tenant-jobs", Name: crawler.Name, Workload: "crawler", WorkloadKind: "Deployment", Identity: 48213,
		Labels: map[string]string{"app": "crawler"}, IP: crawler.IPv4.String()}
	hubCoreDNS := hubblereplay.Pod{Namespace: "kube-system", Name: "coredns", Identity: 102, IP: lab.DNSServiceIP.String()}
	loader := hubblereplay.Pod{Namespace: "tenant-jobs", Name: "loader-5c8d7-qq2xv", Workload: "loader", WorkloadKind: "Deployment", Identity: 48777, Labels: map[string]string{"app": "loader"}, IP: "10.250.9.9"}
	flows := queryFlows(node, hubCrawler, hubCoreDNS, rep)
	for i := range 12 {
		flows = append(flows, hubblereplay.DNSExchange{Node: node, Time: time.Now(), Client: hubCrawler, Server: hubCoreDNS, ClientPort: uint32(60000 + i), Query: "exfil.evil.example.", Denied: true}.Flows()...)
	}
	for i := range 25 {
		flows = append(flows, hubblereplay.DNSExchange{Node: "lab-node-other", Time: time.Now(), Client: loader, Server: hubCoreDNS, ClientPort: uint32(61000 + i), Query: "kafka.tenant-jobs.svc.cluster.local.", Latency: time.Millisecond}.Flows()...)
	}
	good := flows[0]
	noSource := proto.Clone(good).(*flowpb.Flow)
	noSource.Source = nil
	// A DROPPED L7 flow without its L7 record (passes the subscription's verdict filter).
	noL7 := proto.Clone(good).(*flowpb.Flow)
	noL7.L7 = nil
	noL7.Verdict = flowpb.Verdict_DROPPED
	badVerdict := proto.Clone(good).(*flowpb.Flow)
	badVerdict.Verdict = flowpb.Verdict(99)
	flows = append(flows, noSource, noL7, badVerdict)
	peer.srv.PublishFlows(flows...)
	peer.srv.Publish(hubblereplay.Lost(node, time.Now(), flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 17))

	stream, err := client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs", TopNames: 5})
	if err != nil {
		t.Fatal(err)
	}
	f := waitFrame(t, stream, 120, func(f *isoobsv1.TopFrame) bool {
		c := podRow(f, crawler.Name)
		return c != nil && c.Responses >= rep.Answered && c.PolicyDenied >= 12 && podRow(f, loader.Name) != nil
	})
	c, l := podRow(f, crawler.Name), podRow(f, loader.Name)
	if len(f.Rows) != 2 {
		t.Errorf("rows %v", f.Rows)
	}
	// Counted once: the probe's exact counts, not the sum of both sources.
	if c.Queries != rep.Sent || c.Responses != rep.Answered || c.Nxdomain != rep.RCodes.NXDomain || c.Noerror != rep.RCodes.NoError {
		t.Errorf("merged crawler: q %d r %d nx %d noerror %d; client sent %d answered %d %+v", c.Queries, c.Responses, c.Nxdomain, c.Noerror, rep.Sent, rep.Answered, rep.RCodes)
	}
	if strings.Join(c.Sources, ",") != "ebpf,hubble" || c.Identity != 48213 || c.PolicyDenied != 12 || c.PodUid != string(crawler.UID) || c.ProxyLatencyP50Ms == 0 {
		t.Errorf("merged crawler: sources %v identity %d denied %d uid %s proxy p50 %v", c.Sources, c.Identity, c.PolicyDenied, c.PodUid, c.ProxyLatencyP50Ms)
	}
	for _, n := range c.TopNames {
		want, ok := rep.Names[n.Name]
		if !ok {
			want, ok = rep.Names[n.Name+"."]
		}
		if !ok || n.Queries != want.Sent || n.Nxdomain != want.RCodes.NXDomain {
			t.Errorf("crawler name %v, client %+v", n, want)
		}
	}
	if strings.Join(l.Sources, ",") != "hubble" || l.Queries != 25 || l.Responses != 25 || l.Identity != 48777 || l.Workload != "loader" || l.Node != "lab-node-other" {
		t.Errorf("hubble-only loader: %v", l)
	}
	hs := hubbleStatus(t, ctx, client)
	wantFlows := uint64(len(flows))
	if !hs.Connected || hs.LostEvents != 17 || hs.LostEventsBySource["PERF_EVENT_RING_BUFFER"] != 17 || hs.FlowsReceived != wantFlows ||
		hs.SkippedFlows[hubble.SkipNoSourcePod] != 1 || hs.SkippedFlows[hubble.SkipNoL7Record] != 1 || hs.SkippedFlows[hubble.SkipUnknownVerdict] != 1 {
		t.Errorf("hubble status (want %d flows, 17 lost, 3 skipped): %v", wantFlows, hs)
	}
	t.Logf("merged: crawler %d queries (probe), %d denied (hubble), proxy p50 %.3f ms; loader %d (hubble only); hubble %d flows, %.0f flows/s",
		c.Queries, c.PolicyDenied, c.ProxyLatencyP50Ms, l.Queries, hs.FlowsReceived, hs.FlowsPerSecond)

	// Hubble goes away: Status says so, the probe keeps counting.
	peer.stop()
	hs = waitHubble(t, ctx, client, "down", func(h *isoobsv1.HubbleStatus) bool { return !h.Connected && h.Error != "" })
	t.Logf("hubble down: %s", hs.Error)
	rep2, err := dnsgen.RunInPod(ctx, crawler, bin, gen)
	if err != nil || rep2.Answered != rep2.Sent {
		t.Fatalf("second dnsgen run: %v %+v", err, rep2)
	}
	f = waitFrame(t, stream, 120, func(f *isoobsv1.TopFrame) bool {
		c := podRow(f, crawler.Name)
		return c != nil && c.Responses >= rep.Answered+rep2.Answered
	})
	c = podRow(f, crawler.Name)
	if c.Queries != rep.Sent+rep2.Sent || c.Responses != rep.Answered+rep2.Answered || c.PolicyDenied != 12 {
		t.Errorf("while Hubble is down: crawler q %d r %d denied %d, want %d %d 12", c.Queries, c.Responses, c.PolicyDenied, rep.Sent+rep2.Sent, rep.Answered+rep2.Answered)
	}
	if hubbleStatus(t, ctx, client).Connected {
		t.Error("status says connected while Hubble is down")
	}

	// Hubble comes back on the same socket: the daemon reconnects and merges new flows.
	peer.start(node)
	hs = waitHubble(t, ctx, client, "reconnected", func(h *isoobsv1.HubbleStatus) bool { return h.Connected })
	if hs.Reconnects == 0 {
		t.Errorf("reconnects = 0 after the server came back: %v", hs)
	}
	for {
		if _, following := peer.srv.Streams(); following == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	peer.srv.PublishFlows(hubblereplay.DNSExchange{Node: node, Time: time.Now(), Client: hubCrawler, Server: hubCoreDNS, ClientPort: 62000, Query: "exfil.evil.example.", Denied: true}.Flows()...)
	f = waitFrame(t, stream, 120, func(f *isoobsv1.TopFrame) bool {
		c := podRow(f, crawler.Name)
		return c != nil && c.PolicyDenied == 13
	})
	if c = podRow(f, crawler.Name); c.Queries != rep.Sent+rep2.Sent {
		t.Errorf("after reconnect: crawler queries %d, want %d (probe counts only)", c.Queries, rep.Sent+rep2.Sent)
	}
}

func podRow(f *isoobsv1.TopFrame, pod string) *isoobsv1.DNSRow {
	for _, r := range f.Rows {
		if r.Pod == pod {
			return r
		}
	}
	return nil
}
