//go:build linux

package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/labdaemons"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/scenario"
)

// TestClusterTopDNSOnLab is issue 6's end-to-end check: three kwok nodes, one
// real isoobs-daemon process per node (eBPF probe on that node's cgroup root,
// gRPC on a loopback port of its own), a DaemonSet with the chart's labels so
// real daemon Pod objects exist per node, and kwok PortForward objects that
// route each daemon pod's port-forward to its node's daemon. `kubectl isoobs
// top dns` then runs in cluster mode with the lab kubeconfig, exactly as a
// user would, and must count the crawler's flood exactly across nodes; with
// one daemon killed that node is reported missing and the rest stays exact;
// the restricted user gets a clear permission error.
func TestClusterTopDNSOnLab(t *testing.T) {
	needroot.Require(t, "the lab builds network namespaces and cgroups and the daemons load eBPF")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := t.TempDir()
	daemonBin := filepath.Join(bin, "isoobs-daemon")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", daemonBin, "github.com/isoobs/isoobs/cmd/isoobs-daemon").CombinedOutput(); err != nil {
		t.Fatalf("go build isoobs-daemon: %v\n%s", err, out)
	}
	gen, err := dnsgen.BuildBinary(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}

	lab := testlab.StartForTest(t, testlab.Options{})
	nodes := lab.NodeNames()

	// One real daemon per node behind the chart's daemon pod (port-forward routed to it).
	daemons, err := labdaemons.Start(ctx, lab, labdaemons.Options{Binary: daemonBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(daemons.Close)

	app, err := scenario.Apply(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	crawler := app.CrawlerPod()
	t.Logf("crawler %s on %s", crawler.API.Name, crawler.API.Spec.NodeName)

	// Until kwok has seen the PortForward objects and the daemons know the
	// pods, a frame may miss nodes or names.
	testlab.WaitFor(t, 30*time.Second, func() error {
		f, _, err := topDNS(ctx, lab.Kubeconfig(), "--once")
		if err != nil {
			return err
		}
		if len(f.Nodes) != len(nodes) || len(f.MissingNodes) != 0 {
			return fmt.Errorf("nodes %v missing %v", f.Nodes, f.MissingNodes)
		}
		return nil
	})

	dnsServer := netip.AddrPortFrom(lab.DNSServiceIP, 53)
	killed := map[string]bool{} // nodes whose daemon the test killed
	// flood sends exactly count queries from the crawler while a --duration
	// window is open, and returns the frame and the generator's report.
	flood := func(count int64) (top.Frame, *dnsgen.Report, string) {
		t.Helper()
		type result struct {
			f      top.Frame
			stderr string
			err    error
		}
		done := make(chan result, 1)
		go func() {
			f, stderr, err := topDNS(ctx, lab.Kubeconfig(), "--duration", "3s")
			done <- result{f, stderr, err}
		}()
		// The window opens when every daemon holds the view's stream: wait for
		// that (isoobs_top_streams), not for a guessed time. The frame's own
		// [since, time] is checked below too.
		testlab.WaitFor(t, 30*time.Second, func() error {
			for node, d := range daemons.ByNode {
				if killed[node] {
					continue
				}
				if n, err := topStreams(d.MetricsPort); err != nil || n < 1 {
					return fmt.Errorf("daemon on %s: %v top streams (%v)", node, n, err)
				}
			}
			return nil
		})
		genStart := time.Now()
		rep, err := dnsgen.RunInPod(ctx, crawler.Net, gen, dnsgen.Config{Server: dnsServer,
			RandomSuffix: "crawl.jobs-app.example", Count: count, QPS: 4000, Concurrency: 8, Timeout: 500 * time.Millisecond})
		genEnd := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatalf("top dns: %v\n%s", r.err, r.stderr)
		}
		if r.f.Since.After(genStart) || r.f.Time.Before(genEnd) {
			t.Fatalf("the flood [%s, %s] is not inside the frame's window [%s, %s]", genStart.Format(time.StampMicro), genEnd.Format(time.StampMicro),
				r.f.Since.Format(time.StampMicro), r.f.Time.Format(time.StampMicro))
		}
		return r.f, rep, r.stderr
	}
	checkCrawler := func(f top.Frame, rep *dnsgen.Report) {
		t.Helper()
		if len(f.Rows) == 0 {
			t.Fatalf("no rows; frame %+v", f)
		}
		r := f.Rows[0]
		if r.Namespace != scenario.Namespace || r.Workload != scenario.Crawler || r.Pod != crawler.API.Name || r.Node != crawler.API.Spec.NodeName {
			t.Fatalf("first row is %s/%s (workload %s, node %s), want the crawler; rows: %+v", r.Namespace, r.Pod, r.Workload, r.Node, f.Rows)
		}
		if r.Queries != rep.Sent || r.Responses != rep.Answered || r.NXDomain != rep.RCodes.NXDomain {
			t.Errorf("crawler row: queries %d responses %d nxdomain %d; generator: sent %d answered %d nxdomain %d",
				r.Queries, r.Responses, r.NXDomain, rep.Sent, rep.Answered, rep.RCodes.NXDomain)
		}
		if rep.Answered != rep.Sent {
			t.Errorf("generator: %d of %d queries answered; the comparison wants a clean run", rep.Answered, rep.Sent)
		}
	}
	// servedBy sums what DNS servers (CoreDNS) counted as served, cluster-wide.
	servedBy := func(f top.Frame) (served uint64, nodes []string) {
		for _, r := range f.Rows {
			if r.ServedQueries > 0 {
				served += r.ServedQueries
				nodes = append(nodes, r.Node)
			}
		}
		return served, nodes
	}

	const count = 2000
	f, rep, _ := flood(count)
	checkCrawler(f, rep)
	if len(f.Nodes) != len(nodes) || len(f.MissingNodes) != 0 {
		t.Errorf("nodes %v, missing %v: want all %d", f.Nodes, f.MissingNodes, len(nodes))
	}
	if served, on := servedBy(f); served != rep.Sent {
		t.Errorf("CoreDNS (on %v) served %d queries, the crawler sent %d", on, served, rep.Sent)
	}
	t.Logf("all nodes: crawler sent %d, first row %+v", rep.Sent, f.Rows[0])

	report, err := status(ctx, lab.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Daemons) != len(nodes) {
		t.Fatalf("status: %+v", report)
	}
	for i, d := range report.Daemons {
		if d.Node != nodes[i] || d.Error != "" || d.ProbesAttached == 0 || d.ProbesAttached != len(d.Probes) || d.CountingSince == nil || !d.KubernetesConnected {
			t.Errorf("status of %s: %+v", nodes[i], d)
		}
	}

	// Kill the daemon of a node that runs neither the crawler nor CoreDNS if
	// there is one, else any node but the crawler's.
	coreDNSNode := ""
	if dnsPods, err := lab.Client().CoreV1().Pods(testlab.DNSNamespace).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + testlab.DNSAppLabel}); err == nil && len(dnsPods.Items) > 0 {
		coreDNSNode = dnsPods.Items[0].Spec.NodeName
	}
	victim := ""
	for _, n := range nodes {
		if n != crawler.API.Spec.NodeName && (victim == "" || n != coreDNSNode) {
			victim = n
		}
	}
	if err := daemons.ByNode[victim].Kill(); err != nil {
		t.Fatal(err)
	}
	killed[victim] = true
	t.Logf("killed the daemon of %s", victim)

	f, rep, stderr := flood(count)
	checkCrawler(f, rep)
	if len(f.MissingNodes) != 1 || f.MissingNodes[0].Node != victim || f.MissingNodes[0].Reason == "" {
		t.Errorf("missing nodes %+v, want exactly %s with a reason", f.MissingNodes, victim)
	}
	if slices.Contains(f.Nodes, victim) || len(f.Nodes) != len(nodes)-1 {
		t.Errorf("nodes %v must be all but %s", f.Nodes, victim)
	}
	if !strings.Contains(stderr, victim) {
		t.Errorf("stderr must name the missing node %s:\n%s", victim, stderr)
	}
	if served, on := servedBy(f); victim != coreDNSNode && served != rep.Sent {
		t.Errorf("CoreDNS (on %v) served %d queries, the crawler sent %d", on, served, rep.Sent)
	}
	t.Logf("%s missing: %s", victim, f.MissingNodes[0].Reason)
	// One real end-to-end data point for BENCHMARKS.md (not asserted: timing
	// belongs to benchmarks): discovery, access review, port-forwards, frame.
	started := time.Now()
	dialer, err := cluster.NewPortForwardDialer(lab.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	livePods, _, err := cluster.Discover(ctx, lab.Client(), cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	discovered := time.Since(started)
	conns, unreachable, err := cluster.Connect(ctx, livePods, dialer.Dial, cluster.Options{})
	if err != nil || len(conns) != len(nodes)-1 || len(unreachable) != 1 {
		t.Fatalf("connect: %v, %d connected, unreachable %v", err, len(conns), unreachable)
	}
	conns.Close()
	t.Logf("real API server: discovery %s, discovery + %d port-forwards to gRPC ready %s", discovered, len(livePods), time.Since(started))
	if report, err = status(ctx, lab.Kubeconfig()); err != nil {
		t.Fatal(err)
	}
	for _, d := range report.Daemons {
		if (d.Node == victim) != (d.Error != "") {
			t.Errorf("status of %s after killing %s's daemon: %+v", d.Node, victim, d)
		}
	}

	// The restricted user may list pods but not port-forward.
	_, _, err = topDNS(ctx, lab.CP.RestrictedKubeconfig, "--once")
	if err == nil {
		t.Fatal("the restricted user must get a permission error")
	}
	for _, want := range []string{controlplane.RestrictedUser, "pods/portforward", "namespace " + cluster.DefaultNamespace, "kubectl auth can-i create pods/portforward -n " + cluster.DefaultNamespace} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("permission error lacks %q:\n%v", want, err)
		}
	}
	t.Logf("restricted user: %v", err)
}

// topDNS runs `kubectl isoobs top dns -A -o json ARGS` in this process in
// cluster mode and decodes its one frame.
func topDNS(ctx context.Context, kubeconfig string, args ...string) (top.Frame, string, error) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := plugin.NewRootCmd(streams)
	root.SetArgs(append([]string{"top", "dns", "-A", "-o", "json", "--limit", "0", "--kubeconfig", kubeconfig}, args...))
	if err := root.ExecuteContext(ctx); err != nil {
		return top.Frame{}, errOut.String(), err
	}
	var f top.Frame
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		return f, errOut.String(), fmt.Errorf("decoding %q: %w", out.String(), err)
	}
	return f, errOut.String(), nil
}

// status runs `kubectl isoobs status -o json` in this process.
func status(ctx context.Context, kubeconfig string) (plugin.StatusReport, error) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := plugin.NewRootCmd(streams)
	root.SetArgs([]string{"status", "-o", "json", "--kubeconfig", kubeconfig})
	var report plugin.StatusReport
	if err := root.ExecuteContext(ctx); err != nil {
		return report, fmt.Errorf("status: %w\n%s", err, errOut.String())
	}
	err := json.Unmarshal(out.Bytes(), &report)
	return report, err
}

// topStreams reads isoobs_top_streams from a lab daemon's metrics endpoint.
func topStreams(metricsPort int) (float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "isoobs_top_streams "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no isoobs_top_streams in /metrics")
}
