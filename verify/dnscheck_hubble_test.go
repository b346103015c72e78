package verify

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/isoobs/isoobs/plugin/cluster"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// topServer is a daemon whose Top answers each source with its own row for one pod, a frame
// every 10 ms, and records the requests.
type topServer struct {
	isoobsv1.UnimplementedDaemonServer
	rows map[isoobsv1.Source]*isoobsv1.DNSRow
	mu   sync.Mutex
	reqs []*isoobsv1.TopRequest
}

func (s *topServer) Top(req *isoobsv1.TopRequest, stream isoobsv1.Daemon_TopServer) error {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	other := &isoobsv1.DNSRow{Namespace: req.GetNamespace(), Pod: "someone-else", Queries: 1000, Nxdomain: 1000}
	for {
		f := &isoobsv1.TopFrame{Rows: []*isoobsv1.DNSRow{other}}
		if r := s.rows[req.GetSource()]; r != nil && r.Namespace == req.GetNamespace() && r.Pod == req.GetPod() {
			f.Rows = append(f.Rows, r)
		}
		if err := stream.Send(f); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *topServer) requests() []*isoobsv1.TopRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*isoobsv1.TopRequest(nil), s.reqs...)
}

func startTopServer(t *testing.T, rows map[isoobsv1.Source]*isoobsv1.DNSRow) (*topServer, *cluster.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &topServer{rows: rows}
	gs := grpc.NewServer()
	isoobsv1.RegisterDaemonServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return srv, &cluster.Conn{Pod: cluster.DaemonPod{Node: "n1", Namespace: "isoobs", Name: "isoobs-x"}, GRPC: cc}
}

func dnsPolicy(kind, namespace, name string, selector map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cilium.io/v2", "kind": kind,
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"endpointSelector": map[string]any{"matchLabels": selector},
			"egress": []any{map[string]any{"toPorts": []any{map[string]any{
				"ports": []any{map[string]any{"port": "53", "protocol": "ANY"}},
				"rules": map[string]any{"dns": []any{map[string]any{"matchPattern": "*"}}},
			}}}},
		},
	}}
	if namespace != "" {
		u.SetNamespace(namespace)
	}
	return u
}

// The Hubble check on its own: which policy selects the probe pod, the Hubble-only Top of the
// node's daemon, and the verdict, against fakes of the API and the daemon. Through the real wire
// (a daemon container reading Cilium's observer gRPC from a Hubble stand-in, a real
// CiliumNetworkPolicy object): e2e.TestRealNodeVerifyDNSHubble.
func TestHubbleCheck(t *testing.T) {
	const ns, pod = "tenant-jobs", "isoobs-verify-dns-abcde"
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns, Labels: map[string]string{"app": "crawler", "app.kubernetes.io/name": dnsProbeLabel}}}
	daemonPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "isoobs-x", Namespace: "isoobs"}, Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "daemon", Args: []string{"--node-name=n1"}}}}}
	hubbleOff := daemonPod.DeepCopy()
	hubbleOff.Spec.Containers[0].Args = append(hubbleOff.Spec.Containers[0].Args, "--hubble-server", "off")
	listKinds := map[schema.GroupVersionResource]string{cnpGVR: "CiliumNetworkPolicyList", ccnpGVR: "CiliumClusterwideNetworkPolicyList"}
	hubbleRow := func(q, r, nx uint64) map[isoobsv1.Source]*isoobsv1.DNSRow {
		return map[isoobsv1.Source]*isoobsv1.DNSRow{
			isoobsv1.Source_SOURCE_HUBBLE: {Namespace: ns, Pod: pod, Queries: q, Responses: r, Nxdomain: nx},
			isoobsv1.Source_SOURCE_EBPF:   {Namespace: ns, Pod: pod, Queries: 99, Responses: 99, Nxdomain: 99},
		}
	}
	for _, tc := range []struct {
		name     string
		policies []runtime.Object
		daemon   *corev1.Pod
		rows     map[isoobsv1.Source]*isoobsv1.DNSRow
		status   Status
		detail   string
		asked    bool
	}{
		{"no policy", nil, daemonPod, hubbleRow(3, 3, 1), StatusSkip, "not checked: no DNS policy selects the probe pod", false},
		{"a policy for other pods", []runtime.Object{dnsPolicy("CiliumNetworkPolicy", ns, "web-dns", map[string]any{"app": "web"})}, daemonPod, hubbleRow(3, 3, 1),
			StatusSkip, "not checked: no DNS policy selects the probe pod", false},
		{"exact", []runtime.Object{dnsPolicy("CiliumNetworkPolicy", ns, "crawler-dns", map[string]any{"k8s:app": "crawler"})}, daemonPod, hubbleRow(3, 3, 1),
			StatusOK, "Hubble saw exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN (tenant-jobs/crawler-dns selects it)", true},
		{"clusterwide, by namespace", []runtime.Object{dnsPolicy("CiliumClusterwideNetworkPolicy", "", "all-dns", map[string]any{"k8s:io.kubernetes.pod.namespace": ns})}, daemonPod, hubbleRow(3, 3, 1),
			StatusOK, "Hubble saw exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN (all-dns selects it)", true},
		{"one query short", []runtime.Object{dnsPolicy("CiliumNetworkPolicy", ns, "crawler-dns", map[string]any{"app": "crawler"})}, daemonPod, hubbleRow(2, 2, 1),
			StatusFail, "tenant-jobs/crawler-dns selects the probe pod; Hubble reported 2 queries, 2 responses, 1 NXDOMAIN, the probe sent 3 queries, 3 responses, 1 NXDOMAIN", true},
		{"nothing from Hubble", []runtime.Object{dnsPolicy("CiliumNetworkPolicy", ns, "crawler-dns", map[string]any{"app": "crawler"})}, daemonPod, nil,
			StatusFail, "tenant-jobs/crawler-dns selects the probe pod; Hubble reported nothing, the probe sent 3 queries, 3 responses, 1 NXDOMAIN", true},
		{"daemon without Hubble", []runtime.Object{dnsPolicy("CiliumNetworkPolicy", ns, "crawler-dns", map[string]any{"app": "crawler"})}, hubbleOff, hubbleRow(3, 3, 1),
			StatusFail, "tenant-jobs/crawler-dns selects the probe pod, but the daemon isoobs-x runs with --hubble-server=off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(probe.DeepCopy())
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, tc.policies...)
			srv, conn := startTopServer(t, tc.rows)
			o := DNSCheckOptions{Client: client, Dynamic: dyn, Namespace: ns}
			o.defaults()
			e := newEnv(Options{Client: client, Dynamic: dyn})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			r, got, policies := o.hubbleCheck(ctx, e, conn, nil, "n1", daemonOnNode{pod: tc.daemon}, pod, want)
			if r.Status != tc.status || !strings.HasPrefix(r.Detail, tc.detail) {
				t.Errorf("%s %q, want %s %q", r.Status, r.Detail, tc.status, tc.detail)
			}
			if r.Status == StatusFail && r.Next == "" {
				t.Error("a failure without a next command")
			}
			reqs := srv.requests()
			if asked := len(reqs) > 0; asked != tc.asked {
				t.Fatalf("asked the daemon: %v, want %v", asked, tc.asked)
			}
			if tc.asked {
				q := reqs[0]
				if q.GetSource() != isoobsv1.Source_SOURCE_HUBBLE || q.GetNamespace() != ns || q.GetPod() != pod || q.GetDimension() != isoobsv1.Dimension_DIMENSION_DNS {
					t.Errorf("request %v", q)
				}
				if tc.status == StatusOK && (got == nil || *got != want || len(policies) != 1) {
					t.Errorf("counts %+v policies %v", got, policies)
				}
			}
		})
	}
}

// The daemon's side: the eBPF-only row of the probe pod, read until it reaches the probe's
// counts; other pods' rows are not the probe's.
func TestReadPodCounts(t *testing.T) {
	const ns, pod = "isoobs", "isoobs-verify-dns-abcde"
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	srv, conn := startTopServer(t, map[isoobsv1.Source]*isoobsv1.DNSRow{
		isoobsv1.Source_SOURCE_EBPF: {Namespace: ns, Pod: pod, Queries: 3, Responses: 3, Nxdomain: 1},
	})
	got, err := readPodCounts(context.Background(), isoobsv1.NewDaemonClient(conn.GRPC), ns, pod, isoobsv1.Source_SOURCE_EBPF, want)
	if err != nil || got == nil || *got != want {
		t.Fatalf("counts %+v %v, want %+v", got, err, want)
	}
	if q := srv.requests()[0]; q.GetSource() != isoobsv1.Source_SOURCE_EBPF || q.GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_POD || q.GetSinceStreamStart() {
		t.Errorf("request %v: want the pod's counts since the daemon started, eBPF only", q)
	}
	// A pod the daemon has no row for: nil after the settle time, no error.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	got, err = readPodCounts(ctx, isoobsv1.NewDaemonClient(conn.GRPC), ns, "isoobs-verify-dns-zzzzz", isoobsv1.Source_SOURCE_EBPF, want)
	if err != nil || got != nil {
		t.Errorf("absent pod: %+v %v", got, err)
	}
	if r := judgeDaemon(want, got, err, daemonHints{none: "NONE", unreachable: "U", wrong: "W"}); r.Status != StatusFail || r.Next != "W" {
		t.Errorf("absent pod judged %+v", r)
	}
}
