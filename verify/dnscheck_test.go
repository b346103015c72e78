package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A probe run as the lab's CoreDNS answers it: the cluster name and the external name (in the
// lab: a name of the noerror.test zone) resolve, the .invalid name is NXDOMAIN.
func labProbe() DNSProbeReport {
	return DNSProbeReport{Server: "10.96.0.10:53", Results: []DNSProbeResult{
		{Name: "kubernetes.default.svc.cluster.local", Type: "A", Sent: true, Rcode: "NOERROR", Answers: []string{"10.96.0.1"}, LatencyMS: 0.4},
		{Name: "isoobs-verify-dns.invalid", Type: "A", Sent: true, Rcode: "NXDOMAIN", LatencyMS: 0.3},
		{Name: "verify.noerror.test", Type: "A", Sent: true, Rcode: "NOERROR", Answers: []string{"198.51.100.53"}, LatencyMS: 0.3},
	}}
}

func TestDNSProbeExpected(t *testing.T) {
	if got, want := labProbe().Expected(), (DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}); got != want {
		t.Fatalf("expected %+v, want %+v", got, want)
	}
	// A lost answer is a query without a response; a name that could not be sent is nothing.
	r := labProbe()
	r.Results[2].Rcode, r.Results[2].Answers, r.Results[2].Error = "", nil, "no answer within 2s"
	r.Results = append(r.Results, DNSProbeResult{Name: "x.example", Type: "A", Error: "dial udp: no route"})
	if got, want := r.Expected(), (DNSCounts{Queries: 3, Responses: 2, NXDomain: 1}); got != want {
		t.Fatalf("expected %+v, want %+v", got, want)
	}
}

func TestJudgeProbe(t *testing.T) {
	const cn, nx, ext = "kubernetes.default.svc.cluster.local", "isoobs-verify-dns.invalid", "verify.noerror.test"
	r := judgeProbe(labProbe(), cn, nx, ext)
	if r.Status != StatusOK || r.Detail != "asked 10.96.0.10:53: 3 queries, 3 answers, 1 NXDOMAIN, as expected" || len(r.Items) != 3 {
		t.Fatalf("lab probe: %+v", r)
	}
	if r.Items[1] != "isoobs-verify-dns.invalid A: NXDOMAIN, 0 answer(s) in 0.3ms" {
		t.Errorf("item %q", r.Items[1])
	}

	// A resolver that answers everything (a wildcard upstream): the NXDOMAIN name is not.
	wild := labProbe()
	wild.Results[1].Rcode, wild.Results[1].Answers = "NOERROR", []string{"203.0.113.9"}
	r = judgeProbe(wild, cn, nx, ext)
	if r.Status != StatusFail || !strings.Contains(r.Detail, "isoobs-verify-dns.invalid: NOERROR, want NXDOMAIN") ||
		!strings.HasPrefix(r.Next, "kubectl -n kube-system get pods,endpoints -l k8s-app=kube-dns") {
		t.Errorf("wildcard: %+v", r)
	}

	// No upstream: the external name SERVFAILs; the hint is CoreDNS's forward configuration.
	noUp := labProbe()
	noUp.Results[2].Rcode, noUp.Results[2].Answers = "SERVFAIL", nil
	r = judgeProbe(noUp, cn, nx, ext)
	if r.Status != StatusFail || !strings.Contains(r.Detail, "verify.noerror.test: SERVFAIL, want an answer") ||
		!strings.Contains(r.Next, "get configmap coredns") {
		t.Errorf("no upstream: %+v", r)
	}

	// The cluster name times out.
	lost := labProbe()
	lost.Results[0].Rcode, lost.Results[0].Answers, lost.Results[0].Error = "", nil, "no answer within 2s"
	r = judgeProbe(lost, cn, nx, ext)
	if r.Status != StatusFail || !strings.Contains(r.Detail, "kubernetes.default.svc.cluster.local: no answer within 2s, want an answer") {
		t.Errorf("lost: %+v", r)
	}
}

func TestJudgeDaemon(t *testing.T) {
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	h := daemonHints{none: "NONE", unreachable: "UNREACHABLE", wrong: "WRONG"}
	for _, tc := range []struct {
		name   string
		got    *DNSCounts
		err    error
		h      daemonHints
		status Status
		detail string
		next   string
	}{
		{"exact", &DNSCounts{3, 3, 1}, nil, h, StatusOK, "counted exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN", ""},
		{"one query missed", &DNSCounts{2, 2, 1}, nil, h, StatusFail, "the daemon counted 2 queries, 2 responses, 1 NXDOMAIN; the probe sent 3 queries, 3 responses, 1 NXDOMAIN", "WRONG"},
		{"one too many", &DNSCounts{4, 3, 1}, nil, h, StatusFail, "the daemon counted 4 queries, 3 responses, 1 NXDOMAIN; the probe sent 3 queries, 3 responses, 1 NXDOMAIN", "WRONG"},
		{"nxdomain missed", &DNSCounts{3, 3, 0}, nil, h, StatusFail, "the daemon counted 3 queries, 3 responses, 0 NXDOMAIN; the probe sent 3 queries, 3 responses, 1 NXDOMAIN", "WRONG"},
		{"no row", nil, nil, h, StatusFail, "the daemon has no row for the probe pod; it sent 3 queries, 3 responses, 1 NXDOMAIN", "WRONG"},
		{"unreachable", nil, errors.New("port-forward: refused"), h, StatusFail, "cannot read the daemon: port-forward: refused", "UNREACHABLE"},
		{"no daemon on the node", nil, nil, daemonHints{none: "NONE"}, StatusFail, "no isoobs daemon runs on the probe's node: nobody counted its 3 queries, 3 responses, 1 NXDOMAIN", "NONE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := judgeDaemon(want, tc.got, tc.err, tc.h)
			if r.Status != tc.status || r.Detail != tc.detail || r.Next != tc.next {
				t.Errorf("got %s %q next %q\nwant %s %q next %q", r.Status, r.Detail, r.Next, tc.status, tc.detail, tc.next)
			}
		})
	}
}

func TestJudgeHubble(t *testing.T) {
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	r := judgeHubble(want, nil, nil, nil, hubbleHints{})
	if r.Status != StatusSkip || !strings.HasPrefix(r.Detail, "not checked: no DNS policy selects the probe pod") || r.Next != "" {
		t.Errorf("no policy: %+v", r)
	}
	pol := []string{"isoobs/dns-visibility"}
	h := hubbleHints{node: "n1", namespace: "isoobs", pod: "isoobs-verify-dns-abcde", daemon: "isoobs-x"}
	r = judgeHubble(want, &DNSCounts{3, 3, 1}, nil, pol, h)
	if r.Status != StatusOK || r.Detail != "Hubble saw exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN (isoobs/dns-visibility selects it)" {
		t.Errorf("exact: %+v", r)
	}
	r = judgeHubble(want, &DNSCounts{2, 2, 1}, nil, pol, h)
	if r.Status != StatusFail || r.Detail != "isoobs/dns-visibility selects the probe pod; Hubble reported 2 queries, 2 responses, 1 NXDOMAIN, the probe sent 3 queries, 3 responses, 1 NXDOMAIN" ||
		!strings.Contains(r.Next, "hubble observe --pod isoobs/isoobs-verify-dns-abcde --protocol dns") {
		t.Errorf("short: %+v", r)
	}
	r = judgeHubble(want, nil, nil, pol, h)
	if r.Status != StatusFail || !strings.Contains(r.Detail, "Hubble reported nothing") {
		t.Errorf("nothing: %+v", r)
	}
	off := h
	off.off = true
	r = judgeHubble(want, nil, nil, pol, off)
	if r.Status != StatusFail || r.Detail != "isoobs/dns-visibility selects the probe pod, but the daemon isoobs-x runs with --hubble-server=off" ||
		!strings.HasPrefix(r.Next, "kubectl isoobs install --components isoobs") {
		t.Errorf("off: %+v", r)
	}
}

const sampleMetrics = `# HELP isoobs_dns_queries_total DNS queries sent by pods, per namespace and workload.
# TYPE isoobs_dns_queries_total counter
isoobs_dns_queries_total{namespace="isoobs",workload="isoobs-verify-dns-abcde"} 3
isoobs_dns_queries_total{namespace="isoobs",workload="isoobs-verify-dns-abcdef"} 100
isoobs_dns_queries_total{workload="isoobs-verify-dns-abcde",namespace="other"} 50
isoobs_dns_host_queries_total 7
isoobs_dns_responses_total{namespace="isoobs",workload="isoobs-verify-dns-abcde",rcode="NOERROR"} 2
isoobs_dns_responses_total{namespace="isoobs",workload="isoobs-verify-dns-abcde",rcode="NXDOMAIN"} 1
isoobs_dns_responses_total{namespace="isoobs",workload="isoobs-verify-dns-abcde",rcode="SERVFAIL"} 0
isoobs_dns_responses_total{namespace="isoobs",workload="isoobs-verify-dns-abcdef",rcode="NXDOMAIN"} 100
isoobs_dns_responses_total{namespace="we\"ird",workload="isoobs-verify-dns-abcde",rcode="NXDOMAIN"} 9
isoobs_dns_timeouts_total{namespace="isoobs",workload="isoobs-verify-dns-abcde"} 0
`

func TestDNSMetricCounts(t *testing.T) {
	got, err := DNSMetricCounts(strings.NewReader(sampleMetrics), "isoobs", "isoobs-verify-dns-abcde")
	if err != nil {
		t.Fatal(err)
	}
	if want := (DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	got, _ = DNSMetricCounts(strings.NewReader(sampleMetrics), `we"ird`, "isoobs-verify-dns-abcde")
	if want := (DNSCounts{Responses: 9, NXDomain: 9}); got != want {
		t.Errorf("escaped namespace: %+v, want %+v", got, want)
	}
	got, _ = DNSMetricCounts(strings.NewReader(sampleMetrics), "isoobs", "absent")
	if got != (DNSCounts{}) {
		t.Errorf("absent workload: %+v", got)
	}
}

func TestJudgeMetrics(t *testing.T) {
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	h := metricsHints{none: "NONE", scrape: "SCRAPE"}
	r := judgeMetrics(want, &DNSCounts{3, 3, 1}, nil, h)
	if r.Status != StatusOK || r.Detail != "isoobs_dns_queries_total and isoobs_dns_responses_total of the probe's namespace/workload rose by exactly 3 queries, 3 responses, 1 NXDOMAIN" {
		t.Errorf("exact: %+v", r)
	}
	r = judgeMetrics(want, &DNSCounts{}, nil, h)
	if r.Status != StatusFail || r.Detail != "isoobs_dns_* of the probe's namespace/workload rose by 0 queries, 0 responses, 0 NXDOMAIN; the probe sent 3 queries, 3 responses, 1 NXDOMAIN" ||
		!strings.HasPrefix(r.Next, "SCRAPE") {
		t.Errorf("did not rise: %+v", r)
	}
	r = judgeMetrics(want, nil, errors.New("scraping x: 503"), h)
	if r.Status != StatusFail || r.Detail != "scraping x: 503" || r.Next != "SCRAPE" {
		t.Errorf("scrape error: %+v", r)
	}
	r = judgeMetrics(want, nil, nil, metricsHints{none: "NONE"})
	if r.Status != StatusFail || r.Next != "NONE" {
		t.Errorf("no daemon: %+v", r)
	}
}

func TestParseDNSProbeLog(t *testing.T) {
	rep, err := ParseDNSProbeLog([]byte("some warning\n" + `{"server":"10.96.0.10:53","results":[{"name":"a.b","type":"A","sent":true,"rcode":"NXDOMAIN","latencyMs":0.5}]}` + "\n"))
	if err != nil || rep.Server != "10.96.0.10:53" || len(rep.Results) != 1 || rep.Expected() != (DNSCounts{1, 1, 1}) {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, err := ParseDNSProbeLog([]byte("exec /usr/local/bin/isoobs-daemon: unknown command \"resolve\"\n")); err == nil {
		t.Error("a log without a report parsed")
	}
}

func TestValidateDNSNames(t *testing.T) {
	if err := ValidateDNSNames(DefaultDNSClusterName, DefaultDNSNXDomainName, DefaultDNSExternalName); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ c, nx, ext, want string }{
		{"", "a.invalid", "example.com", `--dns-cluster-name "": empty`},
		{"a.b", "a b.invalid", "example.com", `--dns-nxdomain-name "a b.invalid": character ' '`},
		{"a.b", "x..invalid", "example.com", "each label must have 1 to 63 characters"},
		{"a.b", "x.invalid", "A.B.", `--dns-cluster-name and --dns-external-name are both "a.b"`},
	} {
		if err := ValidateDNSNames(tc.c, tc.nx, tc.ext); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %q %q: %v, want %q", tc.c, tc.nx, tc.ext, err, tc.want)
		}
	}
}

// Without daemons there is nothing to check against: a clear error before any pod is created.
func TestRunDNSCheckNoDaemon(t *testing.T) {
	client := fake.NewClientset()
	_, err := RunDNSCheck(context.Background(), DNSCheckOptions{Client: client})
	if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "kubectl isoobs install --components isoobs --wait") {
		t.Fatalf("error %v", err)
	}
	pods, _ := client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
	if len(pods.Items) != 0 {
		t.Errorf("%d pods created", len(pods.Items))
	}

	// A daemon, but --dns-node names no node.
	_, _ = client.CoreV1().Pods("isoobs").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "isoobs-abc", Namespace: "isoobs", Labels: map[string]string{"app.kubernetes.io/name": "isoobs", "app.kubernetes.io/component": "daemon"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "daemon", Image: "ghcr.io/isoobs/isoobs-daemon@sha256:00"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}, metav1.CreateOptions{})
	_, err = RunDNSCheck(context.Background(), DNSCheckOptions{Client: client, Node: "nope"})
	if err == nil || err.Error() != "--dns-node nope: no such node (kubectl get nodes)" {
		t.Fatalf("error %v", err)
	}
	// The daemon runs but is not Ready: no node to pick.
	_, err = RunDNSCheck(context.Background(), DNSCheckOptions{Client: client})
	if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "Ready on any node") {
		t.Fatalf("error %v", err)
	}
}

func TestProbePodSpec(t *testing.T) {
	o := DNSCheckOptions{Namespace: "isoobs", Labels: map[string]string{"app": "crawler"}}
	o.defaults()
	p := o.probePod("isoobs-verify-dns-abcde", "n1", "img@sha256:00", 3*time.Second)
	c := p.Spec.Containers[0]
	want := []string{"resolve", "--delay", "2s", "--linger", "3s", "--timeout", "2s", DefaultDNSClusterName, DefaultDNSNXDomainName, DefaultDNSExternalName}
	if strings.Join(c.Args, " ") != strings.Join(want, " ") || c.Image != "img@sha256:00" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("container %+v", c)
	}
	if p.Spec.NodeName != "n1" || p.Spec.RestartPolicy != corev1.RestartPolicyNever || *p.Spec.ActiveDeadlineSeconds != 90 ||
		p.Labels["app"] != "crawler" || p.Labels["app.kubernetes.io/name"] != "isoobs-verify-dns" || *p.Spec.AutomountServiceAccountToken {
		t.Errorf("pod %+v", p)
	}
}

// The probe pod goes on every way out: here it never runs (no kubelet behind the fake API), and
// the run ends by Ctrl-C (the context) or by --dns-timeout. The report says so, and the pod is
// gone.
func TestRunDNSCheckDeletesProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		cancel  time.Duration
	}{{"ctrl-c", time.Minute, 300 * time.Millisecond}, {"timeout", 300 * time.Millisecond, time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			daemon := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "isoobs-abc", Namespace: "isoobs", Labels: map[string]string{"app.kubernetes.io/name": "isoobs", "app.kubernetes.io/component": "daemon"}},
				Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "daemon", Image: "ghcr.io/isoobs/isoobs-daemon@sha256:00"}}},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			client := fake.NewClientset(daemon, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}})
			ctx, cancel := context.WithTimeout(context.Background(), tc.cancel)
			defer cancel()
			var progress []string
			rep, err := RunDNSCheck(ctx, DNSCheckOptions{Client: client, Node: "n2", Timeout: tc.timeout,
				Progress: func(f string, a ...any) { progress = append(progress, fmt.Sprintf(f, a...)) }})
			if err != nil {
				t.Fatal(err)
			}
			d := rep.DNS
			if d.Node != "n2" || d.Image != "ghcr.io/isoobs/isoobs-daemon@sha256:00" || d.DaemonPod != "" || !d.PodDeleted {
				t.Errorf("status %+v", d)
			}
			if r := rep.Result(DNSIDProbe); r == nil || r.Status != StatusFail || !strings.HasPrefix(r.Detail, "the probe pod did not finish") ||
				!strings.Contains(r.Next, "describe pod "+d.Pod) {
				t.Errorf("probe line %+v", r)
			}
			if r := rep.Result(DNSIDDaemon); r == nil || r.Status != StatusSkip || r.Detail != "not checked: the probe did not report" {
				t.Errorf("daemon line %+v", r)
			}
			if rep.Healthy(false) {
				t.Error("healthy without a probe report")
			}
			pods, _ := client.CoreV1().Pods("isoobs").List(context.Background(), metav1.ListOptions{})
			if len(pods.Items) != 1 || pods.Items[0].Name != "isoobs-abc" {
				t.Errorf("pods left: %d (want only the daemon)", len(pods.Items))
			}
			if len(progress) != 2 || !strings.HasPrefix(progress[1], "probe pod isoobs/"+d.Pod+" deleted: true") {
				t.Errorf("progress %q", progress)
			}
		})
	}
}

// -o json is the verify report (same top-level fields) with the probe's particulars under dns.
func TestDNSReportJSON(t *testing.T) {
	want := DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	rep := &DNSReport{Report: NewReport([]Result{{ID: DNSIDDaemon, Component: ComponentDNS, Status: StatusOK}}, time.Second),
		DNS: &DNSCheckStatus{Node: "n1", Namespace: "isoobs", Pod: "isoobs-verify-dns-abcde", Expected: want, Daemon: &want, PodDeleted: true}}
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schemaVersion", "time", "status", "counts", "durationMs", "results", "dns"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("no %q in %s", k, b.String())
		}
	}
	dns := doc["dns"].(map[string]any)
	if dns["expected"].(map[string]any)["nxdomain"] != 1.0 || dns["daemon"].(map[string]any)["queries"] != 3.0 || dns["podDeleted"] != true {
		t.Errorf("dns %v", dns)
	}
	if _, ok := dns["hubble"]; ok {
		t.Error("hubble counts present though not read")
	}
}
