package verifytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/k8s"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/verify"
)

// Stack is the observability stack installed on a lab by `kubectl isoobs
// install`, with test peers serving each component's wire format at its
// pods' addresses.
type Stack struct {
	Lab   *testlab.Lab
	Relay *Relay
	// AppNamespace runs the application (crawler) whose DNS is watched.
	AppNamespace string

	t      testing.TB
	mu     sync.Mutex
	texts  map[int][]byte    // port -> default body
	perPod map[string][]byte // "pod:port" -> body override
	// daemons serve the isoobs pods' metrics port; pods in noHubble get the one not
	// connected to Hubble.
	daemons  *isoobsDaemons
	noHubble map[string]bool
	served   map[string]func() // "uid:port" -> stop
	relayTC  credentials.TransportCredentials
}

// The pods the stack's peers serve, by namespace, selector and ports.
type peerGroup struct {
	ns, selector string
	ports        []int
}

var peerGroups = []peerGroup{
	{"kube-system", verify.LabelCiliumAgent, []int{verify.PortCiliumAgent, verify.PortHubbleMetrics}},
	{"kube-system", verify.LabelCiliumEnvoy, []int{verify.PortEnvoy}},
	{"kube-system", verify.LabelCiliumOperator, []int{verify.PortCiliumOperator}},
	{"tetragon", verify.LabelTetragon, []int{verify.PortTetragon}},
	{"isoobs", verify.LabelIsoobsDaemon, []int{verify.PortIsoobs}},
	{"kube-system", verify.LabelHubbleRelay, []int{verify.PortRelay}},
	{"cilium-monitoring", "app=prometheus", []int{9090}},
}

// TestdataDir is verify/testdata.
func TestdataDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

func moduleDir(t testing.TB, modVersion string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", modVersion).Output()
	if err != nil {
		t.Fatalf("go mod download -json %s: %v (needs the Go module proxy or a warm module cache)", modVersion, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download -json %s: %s %v", modVersion, info.Error, err)
	}
	return info.Dir
}

// Install installs Cilium, Tetragon, the Prometheus pipeline and the isoobs
// daemons on the lab with the install package (charts from the cilium
// v1.20.2 and tetragon v1.0.0 modules), adds the CiliumNetworkPolicy CRDs
// (Cilium's agent would create them), an application with a DNS policy, and
// starts the peers.
//
// Lab nodes share one host address (kwok's --node-ip 127.0.0.1), so the
// hostNetwork pods of the charts (agent, envoy, operator, tetragon) are
// switched to pod networking: each then has its own address, as each
// node's host address is distinct in a real cluster.
func Install(t testing.TB, lab *testlab.Lab) *Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := &Stack{Lab: lab, t: t, AppNamespace: "tenant-jobs", Relay: NewRelay(lab.NodeNames()...),
		texts: map[int][]byte{}, perPod: map[string][]byte{}, served: map[string]func(){}, noHubble: map[string]bool{}}
	s.daemons = startIsoobsDaemons(t, lab) // before stopAll: cleanups run last-in first-out
	t.Cleanup(s.stopAll)
	for port, file := range map[int]string{
		verify.PortCiliumAgent: "cilium-agent-v1.20.2.prom", verify.PortHubbleMetrics: "hubble-v1.20.2.openmetrics",
		verify.PortCiliumOperator: "cilium-operator-v1.20.2.prom", verify.PortEnvoy: "cilium-envoy-v1.20.2.prom",
		verify.PortTetragon: "tetragon-v1.0.0.prom",
	} {
		b, err := os.ReadFile(filepath.Join(TestdataDir(), file))
		if err != nil {
			t.Fatal(err)
		}
		s.texts[port] = b
	}

	flags := genericclioptions.NewConfigFlags(false)
	kc := lab.Kubeconfig()
	flags.KubeConfig = &kc
	var out bytes.Buffer
	inst, err := install.New(flags, &out)
	if err != nil {
		t.Fatal(err)
	}
	cilium := moduleDir(t, "github.com/cilium/cilium@v1.20.2")
	o := install.Options{
		Values:     values.Defaults(),
		Components: []install.Component{install.ComponentCilium, install.ComponentTetragon, install.ComponentPrometheus, install.ComponentIsoobs},
		Sources: map[install.Component]install.Source{
			install.ComponentCilium:     {Dir: filepath.Join(cilium, "install/kubernetes/cilium")},
			install.ComponentTetragon:   {Dir: filepath.Join(moduleDir(t, "github.com/cilium/tetragon@v1.0.0"), "install/kubernetes")},
			install.ComponentPrometheus: {Dir: filepath.Join(cilium, "examples/kubernetes/addons/prometheus")},
		},
	}
	o.Values.ClusterName = "lab"
	start := time.Now()
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatalf("install: %v\n%s", err, out.String())
	}
	t.Logf("install (no wait) took %s", time.Since(start).Round(time.Millisecond))

	cs := lab.Client()
	for _, d := range []struct{ ns, name string }{{"kube-system", "cilium"}, {"kube-system", "cilium-envoy"}, {"tetragon", "tetragon"}} {
		ds, err := cs.AppsV1().DaemonSets(d.ns).Get(ctx, d.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		podNetworking(&ds.Spec.Template.Spec)
		if _, err := cs.AppsV1().DaemonSets(d.ns).Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dep, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "cilium-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podNetworking(&dep.Spec.Template.Spec)
	if _, err := cs.AppsV1().Deployments("kube-system").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	s.createPolicyCRDs(ctx)
	app := testlab.NewDeployment(s.AppNamespace, "crawler", 2)
	if err := lab.Apply(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDNSPolicy(ctx, true); err != nil {
		t.Fatal(err)
	}
	s.relayTC = s.relayCredentials(ctx)

	n := len(lab.NodeNames())
	for _, w := range []struct {
		ns, sel string
		count   int
	}{
		{"kube-system", verify.LabelCiliumAgent, n}, {"kube-system", verify.LabelCiliumEnvoy, n},
		{"kube-system", verify.LabelCiliumOperator, 2}, {"kube-system", verify.LabelHubbleRelay, 1},
		{"kube-system", verify.LabelHubbleUI, 1}, {"tetragon", verify.LabelTetragon, n},
		{"isoobs", verify.LabelIsoobsDaemon, n}, {"cilium-monitoring", "app=prometheus", 1},
		{s.AppNamespace, "app=crawler", 2},
	} {
		if err := s.waitSettled(ctx, w.ns, w.sel, w.count); err != nil {
			t.Fatalf("%s pods %s: %v", w.ns, w.sel, err)
		}
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stack ready after %s", time.Since(start).Round(time.Millisecond))
	return s
}

// podNetworking turns a hostNetwork pod template into a pod-network one.
func podNetworking(spec *corev1.PodSpec) {
	spec.HostNetwork = false
	spec.DNSPolicy = corev1.DNSClusterFirst
	for i := range spec.Containers {
		for j := range spec.Containers[i].Ports {
			spec.Containers[i].Ports[j].HostPort = 0
		}
	}
}

// Settle waits until count pods of the selector are ready, then starts
// peers for new ones.
func (s *Stack) Settle(ctx context.Context, ns, sel string, count int) error {
	if err := s.waitSettled(ctx, ns, sel, count); err != nil {
		return err
	}
	return s.Reconcile(ctx)
}

// waitSettled waits until exactly count pods match, all ready and adopted
// (a rollout has replaced the old ones).
func (s *Stack) waitSettled(ctx context.Context, ns, sel string, count int) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := s.Lab.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp == nil && k8s.PodReady(p) && !p.Spec.HostNetwork && s.Lab.Pod(ns, p.Name) != nil {
				ready++
			}
		}
		last = fmt.Sprintf("%d pods, %d ready", len(pods.Items), ready)
		return ready == count && len(pods.Items) == count, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %s, want %d)", err, last, count)
	}
	return nil
}

// Reconcile starts a peer for every current pod of the stack that has none.
func (s *Stack) Reconcile(ctx context.Context) error {
	for _, g := range peerGroups {
		pods, err := s.Lab.Client().CoreV1().Pods(g.ns).List(ctx, metav1.ListOptions{LabelSelector: g.selector})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			np := s.Lab.Pod(g.ns, p.Name)
			if np == nil || np.UID != p.UID || p.DeletionTimestamp != nil {
				continue
			}
			for _, port := range g.ports {
				key := fmt.Sprintf("%s:%d", p.UID, port)
				s.mu.Lock()
				_, done := s.served[key]
				s.mu.Unlock()
				if done {
					continue
				}
				var stop func()
				name := p.Name
				switch port {
				case verify.PortRelay:
					stop, err = ServeRelay(np, port, s.Relay, s.relayTC)
				case 9090:
					stop, err = ServeHTTP(np, port, s.targetsHandler())
				case verify.PortIsoobs:
					stop, err = ServeHTTP(np, port, s.daemons.handler(func() bool {
						s.mu.Lock()
						defer s.mu.Unlock()
						return s.noHubble[name]
					}))
				default:
					stop, err = ServeHTTP(np, port, MetricsHandler(func() []byte { return s.text(name, port) }, port == verify.PortHubbleMetrics))
				}
				if err != nil {
					return fmt.Errorf("serving %s/%s on %s: %w", g.ns, p.Name, addr(np, port), err)
				}
				s.mu.Lock()
				s.served[key] = stop
				s.mu.Unlock()
			}
		}
	}
	return nil
}

func (s *Stack) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, stop := range s.served {
		stop()
	}
	s.served = map[string]func(){}
}

func (s *Stack) text(pod string, port int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.perPod[fmt.Sprintf("%s:%d", pod, port)]; ok {
		return b
	}
	return s.texts[port]
}

// Text returns the default metrics body of a port.
func (s *Stack) Text(port int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.texts[port]
}

// SetPodHubbleDown makes one isoobs pod serve the metrics of the daemon that is not connected
// to Hubble (down: true) or of the connected one (false).
func (s *Stack) SetPodHubbleDown(pod string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noHubble[pod] = down
}

// SetPodText makes one pod serve body on port (nil: back to the default).
func (s *Stack) SetPodText(pod string, port int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s:%d", pod, port)
	if body == nil {
		delete(s.perPod, key)
	} else {
		s.perPod[key] = body
	}
}

// WithoutMetrics returns text without the sample lines of the given names.
func WithoutMetrics(text []byte, names ...string) []byte {
	var out []string
	for _, line := range strings.Split(string(text), "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if !strings.HasPrefix(line, "#") && slices.Contains(names, name) {
			continue
		}
		out = append(out, line)
	}
	return []byte(strings.Join(out, "\n"))
}

// targetsHandler answers Prometheus' /api/v1/targets for the stack's
// component pods: a target is up when its peer is being served.
func (s *Stack) targetsHandler() http.Handler {
	type target struct {
		ScrapePool string            `json:"scrapePool"`
		ScrapeURL  string            `json:"scrapeUrl"`
		Health     string            `json:"health"`
		LastError  string            `json:"lastError"`
		Labels     map[string]string `json:"labels"`
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/targets", func(w http.ResponseWriter, r *http.Request) {
		var targets []target
		for _, g := range peerGroups[:5] {
			pods, err := s.Lab.Client().CoreV1().Pods(g.ns).List(r.Context(), metav1.ListOptions{LabelSelector: g.selector})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			for _, p := range pods.Items {
				for _, port := range g.ports {
					s.mu.Lock()
					_, up := s.served[fmt.Sprintf("%s:%d", p.UID, port)]
					s.mu.Unlock()
					t := target{ScrapePool: fmt.Sprintf("kubernetes-pods-%d", port), ScrapeURL: fmt.Sprintf("http://%s:%d/metrics", p.Status.PodIP, port),
						Health: "up", Labels: map[string]string{"job": "kubernetes-pods", "pod": p.Name}}
					if !up {
						t.Health, t.LastError = "down", "connection refused"
					}
					targets = append(targets, t)
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"activeTargets": targets, "droppedTargets": []any{}}})
	})
	return mux
}

var cnpGVR = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}

// createPolicyCRDs registers CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy (names, scope and version as Cilium's;
// the schema is left open, which the API server accepts).
func (s *Stack) createPolicyCRDs(ctx context.Context) {
	s.t.Helper()
	client, err := apiextclient.NewForConfig(s.Lab.RESTConfig())
	if err != nil {
		s.t.Fatal(err)
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
			s.t.Fatal(err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(s.Lab.RESTConfig())
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(cnpGVR).Namespace("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		s.t.Fatal("CiliumNetworkPolicy CRD not served: ", err)
	}
}

const dnsPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: dns-visibility
spec:
  endpointSelector: {}
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s:k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: ANY
      rules:
        dns:
        - matchPattern: "*"
`

// SetDNSPolicy creates or deletes the application namespace's
// CiliumNetworkPolicy with dns rules (the one Hubble DNS visibility needs).
func (s *Stack) SetDNSPolicy(ctx context.Context, present bool) error {
	dyn := dynamic.NewForConfigOrDie(s.Lab.RESTConfig())
	res := dyn.Resource(cnpGVR).Namespace(s.AppNamespace)
	if !present {
		return res.Delete(ctx, "dns-visibility", metav1.DeleteOptions{})
	}
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(dnsPolicy), &obj.Object); err != nil {
		return err
	}
	_, err := res.Create(ctx, &obj, metav1.CreateOptions{})
	return err
}

// relayCredentials: when the installed relay config serves TLS, the peer
// does too, with a certificate for *.hubble-relay.cilium.io signed by the
// cilium-ca Secret when the chart created one (else self-signed).
func (s *Stack) relayCredentials(ctx context.Context) credentials.TransportCredentials {
	cs := s.Lab.Client()
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "hubble-relay-config", metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data["config.yaml"], "tls-relay-server-cert-file") {
		return nil
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "*.hubble-relay.cilium.io"},
		DNSNames: []string{"*.hubble-relay.cilium.io"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	parent, signer := tmpl, any(key)
	if sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "cilium-ca", metav1.GetOptions{}); err == nil {
		if pair, err := tls.X509KeyPair(sec.Data["ca.crt"], sec.Data["ca.key"]); err == nil {
			if ca, err := x509.ParseCertificate(pair.Certificate[0]); err == nil {
				parent, signer = ca, pair.PrivateKey
				s.t.Logf("relay peer: TLS certificate signed by secret kube-system/cilium-ca")
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		s.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		s.t.Fatal(err)
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
}

// ServedPods lists "ns/pod:port" keys currently served, for logs.
func (s *Stack) Served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.served)
}

var _ = appsv1.DaemonSet{}
