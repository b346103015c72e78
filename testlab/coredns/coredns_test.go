package coredns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/coredns"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/podnet"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var (
	genOnce sync.Once
	genBin  string
	genErr  error
	genDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if genDir != "" {
		os.RemoveAll(genDir)
	}
	os.Exit(code)
}

// generator builds testlab/cmd/dnsgen once per test binary.
func generator(t testing.TB) string {
	t.Helper()
	genOnce.Do(func() {
		genDir, genErr = os.MkdirTemp("", "dnsgen-bin-")
		if genErr == nil {
			genBin, genErr = dnsgen.BuildBinary(context.Background(), genDir)
		}
	})
	if genErr != nil {
		t.Fatal(genErr)
	}
	return genBin
}

type lab struct {
	a, b *podnet.Node
	seq  int
}

// newLab makes two nodes of a fresh lab; everything is removed at the end of the test.
func newLab(t testing.TB) *lab {
	t.Helper()
	needroot.Require(t, "the lab")
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	labID := "c" + hex.EncodeToString(b)
	cg2, err := podnet.CgroupV2Mount()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{}
	for i, name := range []string{"lab-node-a", "lab-node-b"} {
		n, err := podnet.NewNode(podnet.NodeConfig{
			Name: name, LabID: labID, Driver: podnet.DriverSystemd,
			CgroupParent: filepath.Join(cg2, "isoobs-"+labID, name),
			PodCIDRv4:    netip.MustParsePrefix(fmt.Sprintf("10.79.%d.0/24", int(b[0])%100*2+i)),
			PodCIDRv6:    netip.MustParsePrefix(fmt.Sprintf("fd79:%x:0:%d::/64", b[0], i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Errorf("closing node: %v", err)
			}
		})
		if i == 0 {
			l.a = n
		} else {
			l.b = n
		}
	}
	return l
}

func (l *lab) pod(t testing.TB, n *podnet.Node, ns, name string) *podnet.Pod {
	t.Helper()
	v4, v6, err := n.AllocateIPs()
	if err != nil {
		t.Fatal(err)
	}
	l.seq++
	uid := fmt.Sprintf("00000000-0000-4000-8000-%012x", l.seq)
	p, err := n.AttachPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: n.Name()},
		Status:     corev1.PodStatus{QOSClass: corev1.PodQOSBurstable, PodIPs: []corev1.PodIP{{IP: v4.String()}, {IP: v6.String()}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clusterIPs picks per-test ClusterIPs so parallel labs never route the same address.
func clusterIPs() (netip.Addr, netip.Addr) {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return netip.AddrFrom4([4]byte{10, 98, b[0], b[1]&0xfe | 2}), netip.MustParseAddr(fmt.Sprintf("fd98::%x:%x", b[0], b[1]))
}

func startCoreDNS(t *testing.T, p *podnet.Pod, opts coredns.Options) *coredns.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := coredns.Start(ctx, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func metrics(t *testing.T, s *coredns.Server) coredns.Metrics {
	t.Helper()
	m, err := s.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGeneratorCountsEqualCoreDNSMetrics runs the generator in one pod against CoreDNS in a pod
// on another node, over UDP and TCP, IPv4 and IPv6, pod IP and ClusterIP, with a known rcode
// mix, and checks its counts against CoreDNS's own counters exactly.
func TestGeneratorCountsEqualCoreDNSMetrics(t *testing.T) {
	l := newLab(t)
	vip4, vip6 := clusterIPs()
	dnsPod := l.pod(t, l.a, "kube-system", "coredns")
	s := startCoreDNS(t, dnsPod, coredns.Options{ClusterIPs: []netip.Addr{vip4, vip6}})
	client := l.pod(t, l.b, "tenant-jobs", "crawler")
	bin := generator(t)

	names := []string{"a.servfail.test", "b.refused.test", "c.noerror.test", "www.example.com"}
	for _, server := range []netip.Addr{dnsPod.IPv4, dnsPod.IPv6, vip4, vip6} {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(proto+"-"+server.String(), func(t *testing.T) {
				before := metrics(t, s)
				rep, err := dnsgen.RunInPod(context.Background(), client, bin, dnsgen.Config{
					Server: netip.AddrPortFrom(server, 53), Proto: proto,
					Names: names, RandomSuffix: "example.com", RandomFraction: 0.25,
					QTypes: []string{"A", "AAAA"}, Count: 400, Concurrency: 4, PerName: true, Seed: 7,
				})
				if err != nil {
					t.Fatal(err)
				}
				d, err := s.MetricsSince(context.Background(), before, rep.Answered)
				if err != nil {
					t.Error(err)
				}
				if rep.Sent != 400 || rep.Answered != 400 || rep.Timeouts != 0 || rep.Failed != 0 {
					t.Fatalf("generator: sent %d answered %d timeouts %d failed %d", rep.Sent, rep.Answered, rep.Timeouts, rep.Failed)
				}
				if d.Requests != rep.Sent {
					t.Errorf("CoreDNS saw %d requests, generator sent %d", d.Requests, rep.Sent)
				}
				if d.RequestsByProto[proto] != rep.Sent {
					t.Errorf("CoreDNS %s requests %d, want %d (%v)", proto, d.RequestsByProto[proto], rep.Sent, d.RequestsByProto)
				}
				fam := "1"
				if server.Is6() {
					fam = "2"
				}
				if d.RequestsByFamily[fam] != rep.Sent {
					t.Errorf("CoreDNS family %s requests %d, want %d", fam, d.RequestsByFamily[fam], rep.Sent)
				}
				want := map[string]uint64{"NOERROR": rep.RCodes.NoError, "NXDOMAIN": rep.RCodes.NXDomain, "SERVFAIL": rep.RCodes.ServFail, "REFUSED": rep.RCodes.Refused}
				for rc, n := range want {
					if d.ResponsesByRcode[rc] != n {
						t.Errorf("rcode %s: CoreDNS %d, generator %d", rc, d.ResponsesByRcode[rc], n)
					}
				}
				if rep.RCodes.Other != 0 || d.Responses != rep.Answered {
					t.Errorf("responses: CoreDNS %d (%v), generator %d (other %d)", d.Responses, d.ResponsesByRcode, rep.Answered, rep.RCodes.Other)
				}
				if d.RequestsByType["A"] != rep.ByQType["A"] || d.RequestsByType["AAAA"] != rep.ByQType["AAAA"] {
					t.Errorf("qtypes: CoreDNS %v, generator %v", d.RequestsByType, rep.ByQType)
				}
				// The zones answer as configured, so the mix is known per name.
				for name, wantRC := range map[string]func(dnsgen.RCodes) uint64{
					"a.servfail.test.": func(r dnsgen.RCodes) uint64 { return r.ServFail },
					"b.refused.test.":  func(r dnsgen.RCodes) uint64 { return r.Refused },
					"c.noerror.test.":  func(r dnsgen.RCodes) uint64 { return r.NoError },
					"www.example.com.": func(r dnsgen.RCodes) uint64 { return r.NXDomain },
				} {
					ns := rep.Names[name]
					if ns == nil || ns.Sent == 0 || wantRC(ns.RCodes) != ns.Sent {
						t.Errorf("name %s: %+v", name, ns)
					}
				}
				if rep.RCodes.ServFail == 0 || rep.RCodes.Refused == 0 || rep.RCodes.NoError == 0 || rep.RCodes.NXDomain <= rep.RCodes.NoError {
					t.Errorf("unexpected rcode mix %+v", rep.RCodes)
				}
			})
		}
	}
}

func dig(t *testing.T, p *podnet.Pod, args ...string) string {
	t.Helper()
	out, err := p.Command(context.Background(), "dig", append([]string{"+time=2", "+tries=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestFixedZonesWithDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (apt-get install dnsutils)")
	}
	l := newLab(t)
	dnsPod := l.pod(t, l.a, "kube-system", "coredns")
	startCoreDNS(t, dnsPod, coredns.Options{})
	client := l.pod(t, l.b, "default", "client")
	for _, server := range []string{"@" + dnsPod.IPv4.String(), "@" + dnsPod.IPv6.String()} {
		for _, tcp := range []string{"+notcp", "+tcp"} {
			if out := dig(t, client, server, tcp, "+short", "x.noerror.test", "A"); strings.TrimSpace(out) != coredns.NoErrorA.String() {
				t.Errorf("%s %s x.noerror.test A: %q", server, tcp, out)
			}
			if out := dig(t, client, server, tcp, "+short", "x.noerror.test", "AAAA"); strings.TrimSpace(out) != coredns.NoErrorAAAA.String() {
				t.Errorf("%s %s x.noerror.test AAAA: %q", server, tcp, out)
			}
			for name, rc := range map[string]string{"www.google.com": "NXDOMAIN", "kubernetes.default.svc.cluster.local": "NXDOMAIN", "x.servfail.test": "SERVFAIL", "x.refused.test": "REFUSED"} {
				if out := dig(t, client, server, tcp, name); !strings.Contains(out, "status: "+rc) {
					t.Errorf("%s %s %s: want %s:\n%s", server, tcp, name, rc, out)
				}
			}
		}
	}
}

// TestKubernetesPluginResolvesLabServices runs CoreDNS against the real lab API server.
func TestKubernetesPluginResolvesLabServices(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (apt-get install dnsutils)")
	}
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{ServiceCIDR: "10.99.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	svc, err := cp.Client().CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dnsPod := l.pod(t, l.a, "kube-system", "coredns")
	vip4, _ := clusterIPs()
	startCoreDNS(t, dnsPod, coredns.Options{Kubeconfig: cp.Kubeconfig, ClusterIPs: []netip.Addr{vip4}})
	client := l.pod(t, l.b, "default", "client")
	for _, server := range []string{"@" + vip4.String(), "@" + dnsPod.IPv6.String()} {
		for _, tcp := range []string{"+notcp", "+tcp"} {
			if out := dig(t, client, server, tcp, "+short", "web.default.svc.cluster.local"); strings.TrimSpace(out) != svc.Spec.ClusterIP {
				t.Errorf("%s %s web.default.svc.cluster.local: %q, want %s", server, tcp, out, svc.Spec.ClusterIP)
			}
			if out := dig(t, client, server, tcp, "nope.default.svc.cluster.local"); !strings.Contains(out, "status: NXDOMAIN") {
				t.Errorf("missing service: %s", out)
			}
			if out := dig(t, client, server, tcp, "www.example.com"); !strings.Contains(out, "status: NXDOMAIN") {
				t.Errorf("outside name: %s", out)
			}
		}
	}
	// A Service created now is picked up by the plugin's watch.
	svc2, err := cp.Client().CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := dig(t, client, "@"+vip4.String(), "+short", "late.default.svc.cluster.local")
		if strings.TrimSpace(out) == svc2.Spec.ClusterIP {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("late service never resolved: %q", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestStartRejectsNilPod(t *testing.T) {
	if _, err := coredns.Start(context.Background(), nil, coredns.Options{}); err == nil {
		t.Fatal("nil pod accepted")
	}
}

// TestDNSPerfCountsEqualCoreDNSMetrics uses dnsperf as a second, independent load source.
func TestDNSPerfCountsEqualCoreDNSMetrics(t *testing.T) {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		t.Skip("dnsperf not installed (apt-get install dnsperf)")
	}
	l := newLab(t)
	dnsPod := l.pod(t, l.a, "kube-system", "coredns")
	s := startCoreDNS(t, dnsPod, coredns.Options{})
	client := l.pod(t, l.b, "default", "loadgen")
	for _, tcp := range []bool{false, true} {
		before := metrics(t, s)
		res, err := dnsgen.RunDNSPerf(context.Background(), client, dnsgen.DNSPerfOptions{
			Server:  netip.AddrPortFrom(dnsPod.IPv6, 53),
			Queries: []string{"a.noerror.test A", "b.servfail.test AAAA", "www.example.com A"},
			Runs:    200, Clients: 2, Outstanding: 20, TCP: tcp,
		})
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.MetricsSince(context.Background(), before, res.Completed)
		if err != nil {
			t.Error(err)
		}
		if res.Sent != 600 || res.Lost != 0 || d.Requests != res.Sent {
			t.Errorf("tcp=%v: dnsperf sent %d lost %d, CoreDNS saw %d", tcp, res.Sent, res.Lost, d.Requests)
		}
		for _, rc := range []string{"NOERROR", "SERVFAIL", "NXDOMAIN"} {
			if res.RCodes[rc] != 200 || d.ResponsesByRcode[rc] != 200 {
				t.Errorf("tcp=%v %s: dnsperf %d, CoreDNS %d, want 200", tcp, rc, res.RCodes[rc], d.ResponsesByRcode[rc])
			}
		}
	}
}

// BenchmarkGeneratorMaxQPS measures how many queries/s dnsgen gets answered by CoreDNS in the
// lab (both in pods, across the host), as fast as 64 queries in flight allow.
func BenchmarkGeneratorMaxQPS(b *testing.B) {
	for _, proto := range []string{"udp", "tcp"} {
		b.Run(proto, func(b *testing.B) {
			l := newLab(b)
			dnsPod := l.pod(b, l.a, "kube-system", "coredns")
			s, err := coredns.Start(context.Background(), dnsPod, coredns.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Stop()
			client := l.pod(b, l.b, "default", "loadgen")
			bin := generator(b)
			b.ResetTimer()
			rep, err := dnsgen.RunInPod(context.Background(), client, bin, dnsgen.Config{
				Server: netip.AddrPortFrom(dnsPod.IPv4, 53), Proto: proto, Names: []string{"a.noerror.test"},
				RandomSuffix: "example.com", Count: int64(b.N), Concurrency: 64,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(rep.QPS, "qps")
			b.ReportMetric(rep.Latency.P99Micros, "p99_us")
			if rep.Timeouts > 0 {
				b.ReportMetric(float64(rep.Timeouts), "timeouts")
			}
		})
	}
}

// BenchmarkDNSPerfMaxQPS is the same measurement with dnsperf, for comparison.
func BenchmarkDNSPerfMaxQPS(b *testing.B) {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		b.Skip("dnsperf not installed")
	}
	l := newLab(b)
	dnsPod := l.pod(b, l.a, "kube-system", "coredns")
	s, err := coredns.Start(context.Background(), dnsPod, coredns.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	client := l.pod(b, l.b, "default", "loadgen")
	b.ResetTimer()
	res, err := dnsgen.RunDNSPerf(context.Background(), client, dnsgen.DNSPerfOptions{
		Server: netip.AddrPortFrom(dnsPod.IPv4, 53), Queries: []string{"a.noerror.test A", "www.example.com A"},
		Runs: b.N/2 + 1, Clients: 4, Outstanding: 64,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.QPS, "qps")
}

// TestPodResolverUsesCoreDNS: a pod with a kubelet-style resolv.conf resolves through CoreDNS
// with the ordinary system resolver (glibc), as a real workload would.
func TestPodResolverUsesCoreDNS(t *testing.T) {
	if _, err := exec.LookPath("getent"); err != nil {
		t.Skip("getent not installed")
	}
	l := newLab(t)
	vip4, _ := clusterIPs()
	dnsPod := l.pod(t, l.a, "kube-system", "coredns")
	s := startCoreDNS(t, dnsPod, coredns.Options{ClusterIPs: []netip.Addr{vip4}})
	client := l.pod(t, l.b, "tenant-jobs", "crawler")
	if err := client.SetResolvConf(podnet.KubeResolvConf("tenant-jobs", "cluster.local", vip4)); err != nil {
		t.Fatal(err)
	}
	before := metrics(t, s)
	out, err := client.Command(context.Background(), "getent", "ahostsv4", "x.noerror.test").CombinedOutput()
	if err != nil || !strings.Contains(string(out), coredns.NoErrorA.String()) {
		t.Fatalf("getent through CoreDNS: %v %s", err, out)
	}
	// ndots:5 makes glibc try the search list first: those NXDOMAINs reach CoreDNS too.
	// The search list is tried first (three NXDOMAINs), then the name itself.
	d, err := s.MetricsSince(context.Background(), before, 4)
	if err != nil || d.ResponsesByRcode["NOERROR"] != 1 || d.ResponsesByRcode["NXDOMAIN"] != 3 {
		t.Errorf("CoreDNS saw %+v (%v)", d, err)
	}
}
