//go:build linux

package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/hubble"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/topspec"
)

// The replayed set of the top http end-to-end test: 1,000 requests to the coreapi workload (600
// to its pod on node a, 400 to its pod on node b), each logged by the server's ingress proxy;
// the recruiter's 100 of them are logged again by its own egress proxy on node b (Cilium logs a
// request at every proxy it passes). 37 are answered 5xx, 74 4xx (18 of them denied by the L7
// policy: the proxy's 403), 889 2xx. Latencies are 200 µs + 37 µs·k, k = 0..999, once each.
const (
	httpE2ERequests = 1000
	httpE2E5xx      = 37
	httpE2E4xx      = 74
	httpE2EDenied   = 18
	httpE2ENodeA    = "lab-node-a"
	httpE2ENodeB    = "lab-node-b"
)

type httpE2EReq struct {
	x      hubblereplay.HTTPRequest
	egress bool // also logged by the client's egress proxy (node b)
}

// httpE2ESet builds the replayed requests; pods maps the names of the lab pods.
func httpE2ESet(pods map[string]hubblereplay.Pod) []httpE2EReq {
	t0 := time.Now().Add(-time.Minute)
	var out []httpE2EReq
	for i := 0; i < httpE2ERequests; i++ {
		server, node := pods["coreapi-a"], httpE2ENodeA
		if i%5 >= 3 {
			server, node = pods["coreapi-b"], httpE2ENodeB
		}
		client := pods["crawler"]
		if i%10 == 0 {
			client = pods["recruiter"]
		}
		x := hubblereplay.HTTPRequest{Node: node, Time: t0.Add(time.Duration(i) * time.Millisecond), Client: client, Server: server,
			ClientPort: uint32(33000 + i), Code: 200, Latency: time.Duration(200+37*((i*7919)%1000)) * time.Microsecond}
		switch {
		case i%27 == 0 && i < 999:
			x.Code = 503
		case i%27 == 13 && (i/27)%2 == 1:
			x.Denied = true
		case i%27 == 13 || i%27 == 14:
			x.Code = 404
		}
		switch i % 4 {
		case 0:
			x.URL = fmt.Sprintf("http://coreapi.tenant-jobs:8080/applicants/%d", 1000+i)
		case 1:
			x.Method, x.URL = "POST", "http://coreapi.tenant-jobs:8080/applicants?source=crawl"
		case 2:
			x.URL = fmt.Sprintf("http://coreapi.tenant-jobs:8080/jobs/%08x-9c1d-4e2f-8a3b-%012x", i, i)
		default:
			// 40 distinct templates: past the 32 a row names, counted in "other".
			x.URL = fmt.Sprintf("http://coreapi.tenant-jobs:8080/reports/weekly-%c%c", 'a'+(i/4%40)/26, 'a'+(i/4%40)%26)
		}
		out = append(out, httpE2EReq{x: x, egress: client.Name == pods["recruiter"].Name})
	}
	return out
}

// httpE2EPolicyCRDs registers the CiliumNetworkPolicy CRDs (names, scope and version as
// Cilium's; the schema left open) and applies the policies the view reads.
func httpE2EPolicyCRDs(t *testing.T, ctx context.Context, lab *testlab.Lab) {
	t.Helper()
	client, err := apiextclient.NewForConfig(lab.RESTConfig())
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
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"tenant-jobs", "tenant-blind"} {
		if err := lab.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	gvr := schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	dyn := dynamic.NewForConfigOrDie(lab.RESTConfig())
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(gvr).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatal("CiliumNetworkPolicy CRD not served: ", err)
	}
	for _, doc := range []string{`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: coreapi-l7, namespace: tenant-jobs}
spec:
  endpointSelector: {matchLabels: {app: coreapi}}
  ingress:
  - toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{}]}
`, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: recruiter-egress-l7, namespace: tenant-jobs}
spec:
  endpointSelector: {matchLabels: {"k8s:app": recruiter}}
  egress:
  - toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: GET}, {method: POST}]}
`} {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// httpE2EHubbleCLI returns the real hubble CLI, building it once with build-bins.sh (~80 s cold).
func httpE2EHubbleCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(controlplane.CacheDir(), "bin", "hubble-v1.20.2", "hubble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", filepath.Join(root, "testlab", "scripts", "build-bins.sh"), "hubble").CombinedOutput(); err != nil {
		t.Fatalf("building the hubble CLI (testlab/scripts/build-bins.sh hubble): %v\n%s", err, out)
	}
	return bin
}

// httpE2EObserve runs `hubble observe` against a peer and returns the flows it printed.
func httpE2EObserve(t *testing.T, addr string, args ...string) []*flowpb.Flow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, httpE2EHubbleCLI(t), append([]string{"observe", "--server", addr, "--last", "10000", "-o", "json", "--protocol", "http"}, args...)...)
	cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null", "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hubble observe %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	evs, st, err := hubblereplay.ReadExport(&stdout)
	if err != nil || st.Skipped != 0 {
		t.Fatalf("hubble observe output: %v %+v", err, st)
	}
	var flows []*flowpb.Flow
	for _, ev := range evs {
		if f := ev.GetFlow(); f != nil {
			flows = append(flows, f)
		}
	}
	return flows
}

// httpE2ETop runs `kubectl isoobs top http --daemon A,B --once -o json` with args set on the
// options and returns the frame and what it printed on stderr.
func httpE2ETop(t *testing.T, ctx context.Context, kubeconfig string, daemons []string, set func(o *TopHTTPOptions)) (top.HTTPFrame, string) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	o := &TopHTTPOptions{src: NewTopDNSOptions(flags, streams), Sort: top.HTTPSortRequests, GroupBy: top.GroupByPod, Paths: 3}
	o.src.DaemonAddrs, o.src.Once, o.src.Output, o.src.Interval, o.src.AllNamespaces = daemons, true, "json", 250*time.Millisecond, true
	if set != nil {
		set(o)
	}
	if err := o.src.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(ctx); err != nil {
		t.Fatalf("top http: %v\nstderr:\n%s", err, errOut.String())
	}
	var f top.HTTPFrame
	if o.src.Output != "json" {
		t.Logf("top http -o %s:\n%s", o.src.Output, out.String())
		return f, errOut.String()
	}
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		t.Fatalf("top http -o json: %v\n%s", err, out.String())
	}
	return f, errOut.String()
}

// httpE2EInBucket checks an estimate (ms) against the true latency (µs): both in one histogram
// bucket, i.e. within 12.5% (topspec.HTTPLatencyBucket).
func httpE2EInBucket(t *testing.T, what string, gotMS float64, trueUS float64) {
	t.Helper()
	lo, hi := topspec.HTTPLatencyBounds(topspec.HTTPLatencyBucket(uint64(trueUS * 1000)))
	if gotMS*1000 < lo || gotMS*1000 >= hi {
		t.Errorf("%s: %.3f ms, true %.3f ms: not in its bucket [%.0f, %.0f) µs", what, gotMS, trueUS/1000, lo, hi)
	}
}

// TestTopHTTPOnLab is issue 19's check of top http: two lab nodes, each with a real daemon (the
// eBPF probe on its node's cgroup root, the lab's API server) following its own Hubble peer that
// replays L7 HTTP flows shaped as Cilium's proxy emits them. `kubectl isoobs top http` merges
// both nodes and must count the replayed set exactly (requests, 4xx, 5xx, denied, per pod,
// workload, Service and client), with p50/p95/p99 in the bucket of the known latencies and the
// paths bounded; the real hubble CLI reading the same peers agrees; namespaces without an L7
// HTTP policy are named.
func TestTopHTTPOnLab(t *testing.T) {
	if testing.Short() {
		t.Skip("lab test: not under -short")
	}
	needroot.Require(t, "the lab builds network namespaces and cgroups and the daemons load eBPF")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{httpE2ENodeA, httpE2ENodeB}})

	// The pods the flows name, real lab pods, and a namespace without any L7 policy.
	httpE2EPolicyCRDs(t, ctx, lab)
	pods := map[string]hubblereplay.Pod{}
	for _, p := range []struct{ key, ns, name, app, node string }{
		{"coreapi-a", "tenant-jobs", "coreapi-7d4f9c8b6-a", "coreapi", httpE2ENodeA},
		{"coreapi-b", "tenant-jobs", "coreapi-7d4f9c8b6-b", "coreapi", httpE2ENodeB},
		{"crawler", "tenant-jobs", "crawler-5fd66fc4f9-kc4k2", "crawler", httpE2ENodeA},
		{"recruiter", "tenant-jobs", "recruiter-79467dc55d-ffbw8", "recruiter", httpE2ENodeB},
		{"legacy", "tenant-blind", "legacy-0", "legacy", httpE2ENodeA},
	} {
		pod := testlab.NewPod(p.ns, p.name, map[string]string{"app": p.app})
		pod.Spec.NodeName = p.node
		if _, err := lab.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		_, np, err := lab.WaitPodReady(ctx, p.ns, p.name)
		if err != nil {
			t.Fatal(err)
		}
		pods[p.key] = hubblereplay.Pod{Namespace: p.ns, Name: p.name, Workload: p.app, WorkloadKind: "Deployment", Identity: uint32(48000 + len(pods)),
			Labels: map[string]string{"app": p.app}, IP: np.IPv4.String()}
	}
	if _, err := lab.Client().CoreV1().Services("tenant-jobs").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "coreapi", Namespace: "tenant-jobs"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "coreapi"}, Ports: []corev1.ServicePort{{Port: 8080}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// One Hubble peer and one daemon per node.
	dir := t.TempDir()
	peers := map[string]*hubblereplay.Server{}
	peerAddr := map[string]string{}
	var daemonAddrs []string
	var clients []isoobsv1.DaemonClient
	for _, node := range []string{httpE2ENodeA, httpE2ENodeB} {
		sock := filepath.Join(dir, node+".sock")
		lis, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := hubblereplay.NewServer(hubblereplay.Options{NodeName: node, MaxFlows: 10000})
		gs := grpc.NewServer()
		srv.Register(gs)
		go func() { _ = gs.Serve(lis) }()
		t.Cleanup(gs.Stop)
		peers[node], peerAddr[node] = srv, "unix://"+sock

		// The daemon's API on a listener of the test's own (no port picked free and then lost).
		apiLis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := apiLis.Addr().String()
		d, err := daemon.New(daemon.Config{NodeName: node, CgroupRoot: lab.Node(node).CgroupRoot(), RESTConfig: lab.RESTConfig(),
			Interval: 250 * time.Millisecond, TCPDisabled: true,
			Hubble: hubble.ClientConfig{Server: peerAddr[node], BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		api := grpc.NewServer()
		isoobsv1.RegisterDaemonServer(api, d.GRPCServer())
		go func() { _ = api.Serve(apiLis) }()
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(runCtx) }()
		t.Cleanup(func() {
			api.Stop()
			stop()
			if err := <-done; err != nil {
				t.Errorf("daemon %s: %v", node, err)
			}
			d.Close()
		})
		daemonAddrs = append(daemonAddrs, addr)
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, isoobsv1.NewDaemonClient(conn))
	}
	// A follower starts at the end of the buffer: publish once both daemons follow.
	testlab.WaitFor(t, 30*time.Second, func() error {
		for node, srv := range peers {
			if _, following := srv.Streams(); following < 1 {
				return fmt.Errorf("the daemon of %s does not follow its Hubble peer yet", node)
			}
		}
		return nil
	})
	set := httpE2ESet(pods)
	wantFlows := map[string]uint64{}
	for _, r := range set {
		peers[r.x.Node].PublishFlows(r.x.Flows()...)
		wantFlows[r.x.Node] += 2
		if r.egress {
			e := r.x
			e.Node, e.Egress = httpE2ENodeB, true
			peers[httpE2ENodeB].PublishFlows(e.Flows()...)
			wantFlows[httpE2ENodeB] += 2
		}
	}
	testlab.WaitFor(t, 30*time.Second, func() error {
		for i, node := range []string{httpE2ENodeA, httpE2ENodeB} {
			st, err := clients[i].Status(ctx, &isoobsv1.StatusRequest{})
			if err != nil {
				return err
			}
			if got := st.GetHubble().GetHttpFlows(); got != wantFlows[node] {
				return fmt.Errorf("%s: %d HTTP flows received, want %d", node, got, wantFlows[node])
			}
		}
		return nil
	})
	if wantFlows[httpE2ENodeA] != 1200 || wantFlows[httpE2ENodeB] != 1000 {
		t.Fatalf("replayed %v flows, want 1200 on a (600 requests) and 1000 on b (400 + the recruiter's 100 again at egress)", wantFlows)
	}

	// The truth, from the set itself.
	latencies := func(k int) float64 { return float64(200 + 37*k) } // µs, the k-th smallest
	per := map[string]*[4]uint64{}                                  // pod -> requests, 5xx, 4xx, denied
	for _, r := range set {
		c := per[r.x.Server.Name]
		if c == nil {
			c = &[4]uint64{}
			per[r.x.Server.Name] = c
		}
		c[0]++
		switch {
		case r.x.Code >= 500:
			c[1]++
		case r.x.Denied:
			c[2]++
			c[3]++
		case r.x.Code >= 400:
			c[2]++
		}
	}

	// By workload: both nodes merged, the egress copies counted once.
	f, stderr := httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.GroupBy = top.GroupByWorkload })
	if len(f.Rows) != 1 || len(f.Nodes) != 2 {
		t.Fatalf("by workload: %d rows from %v, want coreapi's from both nodes: %+v", len(f.Rows), f.Nodes, f.Rows)
	}
	r := f.Rows[0]
	t.Logf("coreapi: %d requests, 5xx %d, 4xx %d (denied %d), p50 %.3f p95 %.3f p99 %.3f ms, paths %d + other %d",
		r.Requests, r.Status5xx, r.Status4xx, r.Denied, r.LatencyP50Ms, r.LatencyP95Ms, r.LatencyP99Ms, len(r.Paths), r.PathsOther.Requests)
	if r.Workload != "coreapi" || r.Pods != 2 || r.Requests != httpE2ERequests || r.Responses != httpE2ERequests || r.Status5xx != httpE2E5xx ||
		r.Status4xx != httpE2E4xx || r.Denied != httpE2EDenied || r.Status2xx != httpE2ERequests-httpE2E5xx-httpE2E4xx || r.ResponsesWithoutLatency != 0 {
		t.Errorf("coreapi row: %+v", r)
	}
	httpE2EInBucket(t, "p50", r.LatencyP50Ms, latencies(499))
	httpE2EInBucket(t, "p95", r.LatencyP95Ms, latencies(949))
	httpE2EInBucket(t, "p99", r.LatencyP99Ms, latencies(989))
	paths := map[string]uint64{}
	var pathSum uint64
	for _, p := range r.Paths {
		paths[p.Method+" "+p.Path] = p.Requests
		pathSum += p.Requests
	}
	if len(r.Paths) > top.HTTPMaxPaths || pathSum+r.PathsOther.Requests != httpE2ERequests || r.PathsOther.Requests == 0 ||
		paths["GET /applicants/{id}"] != 250 || paths["POST /applicants"] != 250 || paths["GET /jobs/{uuid}"] != 250 {
		t.Errorf("paths: %d named (%v), other %+v", len(r.Paths), paths, r.PathsOther)
	}
	vis := map[string]top.L7Namespace{}
	for _, n := range f.L7Visibility {
		vis[n.Namespace] = n
	}
	if n := vis["tenant-jobs"]; n.Pods != 4 || n.VisiblePods != 3 || !slices.Equal(n.Policies, []string{"tenant-jobs/coreapi-l7", "tenant-jobs/recruiter-egress-l7"}) || !slices.Equal(n.UnseenGroups, []string{"crawler-5fd66fc4f9-kc4k2"}) {
		t.Errorf("tenant-jobs visibility: %+v\nwarnings:\n%s", n, stderr)
	}
	if n := vis["tenant-blind"]; n.Pods != 1 || n.VisiblePods != 0 {
		t.Errorf("tenant-blind visibility: %+v\nwarnings:\n%s", n, stderr)
	}
	if !strings.Contains(stderr, "namespace tenant-blind has no L7 HTTP visibility") || !strings.Contains(stderr, "namespace tenant-jobs: 3 of 4 pods") {
		t.Errorf("warnings:\n%s", stderr)
	}

	// By pod and by Service (the Service from its selector: Hubble names none here).
	f, _ = httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, nil)
	if len(f.Rows) != 2 {
		t.Fatalf("by pod: %+v", f.Rows)
	}
	for _, row := range f.Rows {
		c := per[row.Pod]
		if c == nil || row.Requests != c[0] || row.Status5xx != c[1] || row.Status4xx != c[2] || row.Denied != c[3] || row.Direction != "ingress" || row.Service != "tenant-jobs/coreapi" {
			t.Errorf("pod %s: %+v, want requests/5xx/4xx/denied %v", row.Pod, row, c)
		}
	}
	if f.Rows[0].Pod != pods["coreapi-a"].Name || f.Rows[0].Requests != 600 || f.Rows[0].Node != httpE2ENodeA || f.Rows[1].Requests != 400 || f.Rows[1].Node != httpE2ENodeB {
		t.Errorf("by pod, busiest first: %s %d on %s, %s %d on %s", f.Rows[0].Pod, f.Rows[0].Requests, f.Rows[0].Node, f.Rows[1].Pod, f.Rows[1].Requests, f.Rows[1].Node)
	}
	f, _ = httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.GroupBy = top.GroupByService; o.Sort = top.HTTPSortErrors })
	if len(f.Rows) != 1 || f.Rows[0].Service != "tenant-jobs/coreapi" || f.Rows[0].Requests != httpE2ERequests || f.Rows[0].Status5xx != httpE2E5xx {
		t.Errorf("by service: %+v", f.Rows)
	}
	// Clients: the recruiter's requests from its own egress proxy, the crawler's from coreapi's.
	f, _ = httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.Clients = true })
	got := map[string]string{}
	for _, row := range f.Rows {
		got[row.Pod] = fmt.Sprintf("%d/%s", row.Requests, row.Direction)
	}
	if len(got) != 2 || got[pods["crawler"].Name] != "900/ingress" || got[pods["recruiter"].Name] != "100/egress" || f.Total.Requests != httpE2ERequests {
		t.Errorf("clients: %v, total %d", got, f.Total.Requests)
	}

	// --since: the daemons' history over the last 5 minutes holds the whole replay (the daemons
	// are younger), merged exactly, with when it ran.
	f, stderr = httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.GroupBy, o.src.Since = top.GroupByWorkload, 5*time.Minute })
	if len(f.Rows) != 1 || f.LookBackSeconds != 300 {
		t.Fatalf("--since 5m by workload: look-back %v, %+v", f.LookBackSeconds, f.Rows)
	}
	if r := f.Rows[0]; r.Requests != httpE2ERequests || r.Status5xx != httpE2E5xx || r.Status4xx != httpE2E4xx || r.Denied != httpE2EDenied || r.Pods != 2 ||
		r.FirstSeen == nil || r.LastSeen == nil || r.LastSeen.Before(*r.FirstSeen) {
		t.Errorf("--since 5m: %+v", r)
	}
	if !strings.Contains(stderr, "look-back: history covers") {
		t.Errorf("--since 5m on daemons younger than that: stderr:\n%s", stderr)
	}

	// What an engineer reads (logged): the table, by workload, and a look-back.
	httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.GroupBy, o.src.Output = top.GroupByWorkload, "" })
	httpE2ETop(t, ctx, lab.Kubeconfig(), daemonAddrs, func(o *TopHTTPOptions) { o.src.Since, o.src.Output = 5*time.Minute, "" })

	// The real hubble CLI reads the same peers: its flows give the same counts, and the exact
	// percentiles of its latencies are the ones top http's histogram holds.
	var cliReq, cli5xx, cli4xx int
	var cliLat []float64
	for _, node := range []string{httpE2ENodeA, httpE2ENodeB} {
		for _, fl := range httpE2EObserve(t, peerAddr[node], "--traffic-direction", "ingress") {
			h := fl.GetL7().GetHttp()
			switch fl.GetL7().GetType() {
			case flowpb.L7FlowType_REQUEST:
				cliReq++
			case flowpb.L7FlowType_RESPONSE:
				switch h.GetCode() / 100 {
				case 5:
					cli5xx++
				case 4:
					cli4xx++
				}
				cliLat = append(cliLat, float64(fl.GetL7().GetLatencyNs())/1000)
			}
		}
	}
	egress := httpE2EObserve(t, peerAddr[httpE2ENodeB], "--traffic-direction", "egress")
	slices.Sort(cliLat)
	if cliReq != httpE2ERequests || cli5xx != httpE2E5xx || cli4xx != httpE2E4xx || len(cliLat) != httpE2ERequests || len(egress) != 200 {
		t.Fatalf("hubble observe: %d ingress requests, %d 5xx, %d 4xx, %d latencies, %d egress flows; want %d, %d, %d, %d, 200",
			cliReq, cli5xx, cli4xx, len(cliLat), len(egress), httpE2ERequests, httpE2E5xx, httpE2E4xx, httpE2ERequests)
	}
	for _, c := range []struct {
		name string
		rank int
		got  float64
	}{{"p50", 500, r.LatencyP50Ms}, {"p95", 950, r.LatencyP95Ms}, {"p99", 990, r.LatencyP99Ms}} {
		if exact := cliLat[c.rank-1]; exact != latencies(c.rank-1) {
			t.Errorf("%s from hubble observe: %.0f µs, want %.0f", c.name, exact, latencies(c.rank-1))
		}
		httpE2EInBucket(t, c.name+" vs hubble observe", c.got, cliLat[c.rank-1])
	}
}
