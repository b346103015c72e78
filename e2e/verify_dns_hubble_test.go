//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/plugin"
	"github.com/isoobs/isoobs/release/image"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/realnode"
	"github.com/isoobs/isoobs/verify"
)

// Where Cilium, as `kubectl isoobs install` configures it (hubble.socketPath), keeps the node's
// Hubble socket; the chart mounts only this directory into the daemon.
const (
	hubbleSocketDir = "/var/run/cilium/hubble-socket"
	hubbleSocket    = hubbleSocketDir + "/hubble.sock"
)

// TestRealNodeVerifyDNSHubble is issue 16 item 6's Hubble line through the real wire: `kubectl
// isoobs verify --dns` on the lab's real kubelet node, with a CiliumNetworkPolicy with DNS rules
// selecting the probe pod, must report that Hubble saw exactly the probe's 3 queries, 3
// responses, 1 NXDOMAIN — and fail, with its hint, when Hubble reports fewer.
//
// What is real: the control plane (kube-apiserver, etcd, scheduler, kcm); the kubelet,
// containerd and runc of the real node; the isoobs daemon as a container of the release image,
// installed by `kubectl isoobs install` with `--hubble-address unix:///var/run/cilium/hubble-socket/hubble.sock`,
// which reads Hubble over the observer gRPC API (GetFlows, follow, the same whitelist as against
// Cilium) through the chart's read-only hostPath mount of that directory; the probe pod (the same
// image's `isoobs-daemon resolve`) and its 3 queries to the lab's real CoreDNS; the
// CiliumNetworkPolicy object (the API server serves the cilium.io/v2 CRDs, names and scope as
// Cilium's, schema left open) that verify lists and matches against the probe's labels; the
// port-forward to the daemon's Top; the whole `kubectl isoobs verify --dns` command.
//
// What stands in: Cilium's agent. No Cilium runs in the lab, so nothing enforces the policy and
// no DNS proxy sees the probe's packets. testlab/hubblereplay, a server of Cilium's real
// observer.Observer service, listens on the host at Hubble's socket path, and the test plays
// the DNS proxy: when the probe pod has finished, it publishes the L7 flows Cilium's DNS proxy
// emits for a pod under a DNS policy (a REQUEST flow and a RESPONSE flow with the rcode per
// query, endpoints with the pod's namespace, name, labels and IP, egress, FORWARDED), one
// exchange per name the probe was told to resolve, with the rcode the lab's CoreDNS gives that
// name: the ground truth comes from the names the test chose, not from the probe's report (which
// the test then checks against it). The failing case publishes the exchanges for two of the
// three names only, as a Hubble that lost one query's flows would. The daemon and metrics lines
// stay real counts of the probe's real packets in both runs (3 queries, 3 responses, 1 NXDOMAIN);
// only the Hubble line's input is the stand-in's. About a minute on the lab (two verify runs of
// ~10 s and ~20 s: a failing count waits out the settle time).
func TestRealNodeVerifyDNSHubble(t *testing.T) {
	needroot.Require(t, "the real node runs a kubelet and containerd and the daemon loads eBPF")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	if _, err := realnode.EnsureBinaries(); err != nil {
		t.Fatal(err)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	t0 := time.Now()
	res, err := image.Build(ctx, image.Options{RepoRoot: root, Version: verifyDNSVersion, Commit: "verify-dns-hubble-e2e",
		Date: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), Platforms: []string{"linux/" + runtime.GOARCH}, OutDir: filepath.Join(work, "image")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: daemon image %s built in %s", res.Reference, time.Since(t0).Round(time.Millisecond))
	oldRepo, oldTag, oldDigest := deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest
	deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = image.DefaultRepository, verifyDNSVersion, res.IndexDigest
	t.Cleanup(func() {
		deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = oldRepo, oldTag, oldDigest
	})

	t0 = time.Now()
	lab := testlab.StartForTest(t, testlab.Options{RealNode: true, Nodes: []string{"vdh-kwok-a"}})
	t.Logf("timing: lab + real node up in %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{lab.Real.KubeletLog(), lab.Real.ContainerdLog()} {
				if b, err := os.ReadFile(f); err == nil {
					t.Logf("last lines of %s:\n%s", f, tailLines(string(b), 40))
				}
			}
		}
	})
	client := lab.Client()
	real := lab.Real.Name

	// The Hubble stand-in on the host, where the chart mounts Hubble's socket directory from
	// (before the install: the hostPath is of type Directory). Cleanups run LIFO: it stops
	// after the daemons are gone, before the real node's teardown removes /run/cilium.
	if err := os.MkdirAll(hubbleSocketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(hubbleSocket)
	lis, err := net.Listen("unix", hubbleSocket)
	if err != nil {
		t.Fatal(err)
	}
	hub := hubblereplay.NewServer(hubblereplay.Options{NodeName: real})
	gs := grpc.NewServer()
	hub.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = os.Remove(hubbleSocket)
		_ = os.Remove(hubbleSocketDir) // only if empty
	})

	if err := lab.Real.ImportImage(ctx, res.OCIArchive); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "install", "--components", "isoobs", "--hubble-address", "unix://"+hubbleSocket); err != nil {
		t.Fatalf("kubectl isoobs install: %v\n%s\n%s", err, out, errOut)
	}
	dpod := waitRealDaemonReady(t, ctx, lab)
	if args := dpod.Spec.Containers[0].Args; !slices.Contains(args, "--hubble-server=unix://"+hubbleSocket) {
		t.Fatalf("daemon args %v: want --hubble-server=unix://%s", args, hubbleSocket)
	}
	// The daemon in its container has subscribed to the stand-in (follow: it gets only flows
	// published from now on, as from Hubble).
	testlab.WaitFor(t, 60*time.Second, func() error {
		if total, following := hub.Streams(); following != 1 {
			return fmt.Errorf("the daemon is not following the Hubble stand-in: %d GetFlows calls, %d following", total, following)
		}
		return nil
	})
	t.Logf("daemon pod %s Ready on %s, following Hubble at %s", dpod.Name, real, hubbleSocket)

	// The application's namespace and its DNS policy, which the probe joins with --dns-labels.
	const appNS, appLabel, policy = "tenant-jobs", "crawler", "crawler-dns"
	if err := lab.EnsureNamespace(ctx, appNS); err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 60*time.Second, func() error { // the probe pod needs the namespace's ServiceAccount
		_, err := client.CoreV1().ServiceAccounts(appNS).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	createCiliumPolicyCRDs(t, ctx, lab)
	cnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
		"metadata": map[string]any{"name": policy, "namespace": appNS},
		"spec": map[string]any{
			"endpointSelector": map[string]any{"matchLabels": map[string]any{"app": appLabel}},
			"egress": []any{map[string]any{
				"toEndpoints": []any{map[string]any{"matchLabels": map[string]any{"k8s:io.kubernetes.pod.namespace": testlab.DNSNamespace, "k8s:k8s-app": testlab.DNSAppLabel}}},
				"toPorts": []any{map[string]any{
					"ports": []any{map[string]any{"port": "53", "protocol": "ANY"}},
					"rules": map[string]any{"dns": []any{map[string]any{"matchPattern": "*"}}},
				}},
			}},
		},
	}}
	if _, err := dynamic.NewForConfigOrDie(lab.RESTConfig()).Resource(ciliumPolicyGVR).Namespace(appNS).Create(ctx, cnp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The DNS server as Hubble names it: the lab's CoreDNS pod.
	dnsPods, err := client.CoreV1().Pods(testlab.DNSNamespace).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + testlab.DNSAppLabel})
	if err != nil || len(dnsPods.Items) == 0 {
		t.Fatalf("CoreDNS pods: %v %v", dnsPods, err)
	}
	cd := dnsPods.Items[0]
	server := hubblereplay.Pod{Namespace: cd.Namespace, Name: cd.Name, Workload: testlab.DNSDeployment, WorkloadKind: "Deployment", Identity: 102,
		Labels: cd.Labels, IP: cd.Status.PodIP}

	// Ground truth: the names the probe is told to resolve, and what the lab's CoreDNS answers.
	truth := []struct {
		name  string
		rcode uint32
	}{
		{verify.DefaultDNSClusterName, 0},  // the cluster's own name: NOERROR
		{verify.DefaultDNSNXDomainName, 3}, // .invalid: NXDOMAIN
		{verifyDNSExternal, 0},             // the lab's "external" zone answers every name: NOERROR
	}
	want := verify.DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}

	// run runs verify --dns while a watcher plays Cilium's DNS proxy for the probe pod: once the
	// pod has finished, it publishes the exchanges of the first `emit` names of truth.
	run := func(emit int) (*verify.DNSReport, string, int, error) {
		t.Helper()
		wctx, wcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var probe string
		published := 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = wait.PollUntilContextCancel(wctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				pods, err := client.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=isoobs-verify-dns"})
				if err != nil {
					return false, nil
				}
				for _, p := range pods.Items {
					if p.Status.Phase != corev1.PodSucceeded || p.Status.PodIP == "" && len(p.Status.PodIPs) == 0 {
						continue
					}
					ip := p.Status.PodIP
					if ip == "" {
						ip = p.Status.PodIPs[0].IP
					}
					c := hubblereplay.Pod{Namespace: p.Namespace, Name: p.Name, Identity: 48213, Labels: p.Labels, IP: ip}
					now := time.Now()
					var flows int
					for i, q := range truth[:emit] {
						fl := hubblereplay.DNSExchange{Node: real, Time: now.Add(time.Duration(i) * time.Millisecond), Client: c, Server: server,
							ClientPort: uint32(41000 + i), Query: q.name + ".", QType: "A", Rcode: q.rcode, Latency: 900 * time.Microsecond}.Flows()
						hub.PublishFlows(fl...)
						flows += len(fl)
					}
					mu.Lock()
					probe, published = p.Name, flows
					mu.Unlock()
					return true, nil
				}
				return false, nil
			})
		}()
		out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "verify", "--dns", "--dns-node", real, "--dns-external-name", verifyDNSExternal,
			"--dns-namespace", appNS, "--dns-labels", "app="+appLabel, "-o", "json")
		wcancel()
		wg.Wait()
		t.Logf("verify --dns -o json (emitted %d of %d exchanges):\n%s\nstderr:\n%s", emit, len(truth), out, errOut)
		if err != nil && !errors.Is(err, plugin.ErrVerifyFailed) {
			t.Fatalf("verify --dns: %v\n%s", err, errOut)
		}
		mu.Lock()
		defer mu.Unlock()
		return decodeDNSReport(t, out), probe, published, err
	}

	// Healthy: every line exact, Hubble's too.
	t0 = time.Now()
	rep, probe, published, err := run(len(truth))
	t.Logf("timing: verify --dns with Hubble in %s", time.Since(t0).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("verify --dns: %v", err)
	}
	d := rep.DNS
	if probe == "" || d.Pod != probe || d.Namespace != appNS || d.Node != real {
		t.Fatalf("probe %s/%s on %s; the stand-in published for %q (%d flows)", d.Namespace, d.Pod, d.Node, probe, published)
	}
	if published != 6 {
		t.Errorf("the stand-in published %d flows, want 6 (a request and a response per name)", published)
	}
	checkProbeAgainstTruth(t, d, truth)
	if d.Expected != want {
		t.Errorf("the probe sent %+v, want %+v", d.Expected, want)
	}
	for what, got := range map[string]*verify.DNSCounts{"daemon": d.Daemon, "hubble": d.Hubble, "metrics": d.Metrics} {
		if got == nil || *got != want {
			t.Errorf("%s counted %+v, want %+v", what, got, want)
		}
	}
	if strings.Join(d.Policies, ",") != appNS+"/"+policy {
		t.Errorf("policies %v, want [%s/%s]", d.Policies, appNS, policy)
	}
	for _, id := range []string{verify.DNSIDProbe, verify.DNSIDDaemon, verify.DNSIDHubble, verify.DNSIDMetrics} {
		if r := rep.Result(id); r == nil || r.Status != verify.StatusOK {
			t.Errorf("%s: %+v, want ok", id, r)
		}
	}
	if r := rep.Result(verify.DNSIDHubble); r == nil || r.Detail != "Hubble saw exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN (tenant-jobs/crawler-dns selects it)" {
		t.Errorf("hubble line %+v", r)
	}
	checkProbeGone(t, ctx, lab, d)

	// Failing: Hubble reports the cluster name's and the NXDOMAIN name's exchanges only (the
	// external name's request and response never come). The daemon and the metrics still count
	// the probe's 3 queries; the Hubble line fails with the command to run.
	rep, probe, published, err = run(2)
	if !errors.Is(err, plugin.ErrVerifyFailed) {
		t.Fatalf("verify --dns with one exchange missing from Hubble: %v, want ErrVerifyFailed (exit 1)", err)
	}
	d = rep.DNS
	if probe == "" || d.Pod != probe || published != 4 {
		t.Fatalf("probe %s/%s; the stand-in published %d flows for %q, want 4", d.Namespace, d.Pod, published, probe)
	}
	checkProbeAgainstTruth(t, d, truth)
	short := verify.DNSCounts{Queries: 2, Responses: 2, NXDomain: 1}
	if d.Expected != want || d.Daemon == nil || *d.Daemon != want || d.Metrics == nil || *d.Metrics != want || d.Hubble == nil || *d.Hubble != short {
		t.Errorf("expected %+v daemon %+v metrics %+v hubble %+v; want %+v, Hubble %+v", d.Expected, d.Daemon, d.Metrics, d.Hubble, want, short)
	}
	if got := rep.Failing(verify.StatusFail); strings.Join(got, ",") != verify.DNSIDHubble {
		t.Errorf("failing %v, want [dns/hubble]", got)
	}
	r := rep.Result(verify.DNSIDHubble)
	wantDetail := "tenant-jobs/crawler-dns selects the probe pod; Hubble reported 2 queries, 2 responses, 1 NXDOMAIN, the probe sent 3 queries, 3 responses, 1 NXDOMAIN"
	wantNext := fmt.Sprintf("kubectl isoobs status --node %s  # Hubble connected? lost events? and hubble observe --pod %s/%s --protocol dns", real, appNS, d.Pod)
	if r == nil || r.Detail != wantDetail || r.Next != wantNext {
		t.Errorf("hubble line %+v\nwant detail %q\nwant next %q", r, wantDetail, wantNext)
	}
	checkProbeGone(t, ctx, lab, d)
}

// checkProbeAgainstTruth: the probe resolved the names the stand-in reported, with the rcodes
// the stand-in gave them (the stand-in's flows come from the names, not from the probe's report).
func checkProbeAgainstTruth(t *testing.T, d *verify.DNSCheckStatus, truth []struct {
	name  string
	rcode uint32
}) {
	t.Helper()
	rcodes := map[uint32]string{0: "NOERROR", 3: "NXDOMAIN"}
	if len(d.Queries) != len(truth) {
		t.Fatalf("the probe reported %d names, want %d: %+v", len(d.Queries), len(truth), d.Queries)
	}
	for i, q := range truth {
		got := d.Queries[i]
		if strings.TrimSuffix(got.Name, ".") != q.name || !got.Sent || got.Rcode != rcodes[q.rcode] || got.Type != "A" {
			t.Errorf("probe's query %d: %+v, the stand-in reported %s A %s", i, got, q.name, rcodes[q.rcode])
		}
	}
}

var ciliumPolicyGVR = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}

// createCiliumPolicyCRDs registers CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (names,
// scope and version as Cilium's; the schema is left open) and waits until they are served.
func createCiliumPolicyCRDs(t *testing.T, ctx context.Context, lab *testlab.Lab) {
	t.Helper()
	cs, err := apiextclient.NewForConfig(lab.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	open := true
	for _, c := range []struct {
		plural, kind, short string
		scope               apiextv1.ResourceScope
	}{
		{"ciliumnetworkpolicies", "CiliumNetworkPolicy", "cnp", apiextv1.NamespaceScoped},
		{"ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", "ccnp", apiextv1.ClusterScoped},
	} {
		crd := &apiextv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: c.plural + ".cilium.io"},
			Spec: apiextv1.CustomResourceDefinitionSpec{
				Group: "cilium.io", Scope: c.scope,
				Names: apiextv1.CustomResourceDefinitionNames{Plural: c.plural, Kind: c.kind, ShortNames: []string{c.short}, ListKind: c.kind + "List"},
				Versions: []apiextv1.CustomResourceDefinitionVersion{{Name: "v2", Served: true, Storage: true,
					Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &open}}}},
			},
		}
		if _, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(lab.RESTConfig())
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(ciliumPolicyGVR).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatal("CiliumNetworkPolicy CRD not served: ", err)
	}
}
