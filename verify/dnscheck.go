package verify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/isoobs/isoobs/plugin/cluster"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// The active DNS check (`kubectl isoobs verify --dns`): a short-lived probe pod, running the
// daemon image's `isoobs-daemon resolve`, sends exactly one A query for an in-cluster name, a
// name that must be NXDOMAIN and an external name, and reports what it got. Then the check
// compares what it sent with what each observer counted for that pod: the node's daemon (its
// Top gRPC through the same port-forward top dns uses), Hubble (where a DNS policy selects the
// pod) and the daemon's /metrics (the pod's namespace/workload series). The pod is deleted
// afterwards, also on failure and on cancel.

// Check IDs of the active DNS check, all in component ComponentDNS.
const (
	ComponentDNS   = "dns"
	DNSIDProbe     = "dns/answers"
	DNSIDDaemon    = "dns/daemon"
	DNSIDHubble    = "dns/hubble"
	DNSIDMetrics   = "dns/metrics"
	dnsProbeLabel  = "isoobs-verify-dns"
	dnsProbePrefix = "isoobs-verify-dns-"
	dnsContainer   = "probe"
)

// Defaults of the names the probe resolves.
const (
	DefaultDNSClusterName  = "kubernetes.default.svc.cluster.local"
	DefaultDNSNXDomainName = "isoobs-verify-dns.invalid" // RFC 6761: .invalid never resolves
	DefaultDNSExternalName = "example.com"
)

// DNSCheckOptions configure RunDNSCheck.
type DNSCheckOptions struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface // for CiliumNetworkPolicies (nil: the Hubble check is not made)
	Config  *rest.Config      // for the port-forward to the daemon
	// DaemonNamespace and DaemonSelector find the isoobs daemons (defaults: cluster's).
	DaemonNamespace string
	DaemonSelector  string
	// Namespace of the probe pod (default DaemonNamespace); Labels are added to it (so a DNS
	// policy of that namespace can select it).
	Namespace string
	Labels    map[string]string
	// Node runs the probe ("": the first node, by name, whose daemon is Ready).
	Node string
	// Image of the probe ("": the daemon pod's image on that node, so nothing is pulled).
	Image string
	// Names resolved (defaults above).
	ClusterName, NXDomainName, ExternalName string
	// Timeout bounds the whole check (pod start, probe, counting); default 1m.
	Timeout time.Duration
	// Settle is how long the counts may take to show after the probe ended (default 10s; the
	// daemon reads its maps every second).
	Settle time.Duration
	// Progress, if set, gets one line per step (for stderr).
	Progress func(format string, args ...any)

	// dial replaces the port-forward (tests).
	dial cluster.DialFunc
}

// DNSCounts are a pod's DNS counts as one observer saw them.
type DNSCounts struct {
	Queries   uint64 `json:"queries"`
	Responses uint64 `json:"responses"`
	NXDomain  uint64 `json:"nxdomain"`
}

func (c DNSCounts) String() string {
	return fmt.Sprintf("%d queries, %d responses, %d NXDOMAIN", c.Queries, c.Responses, c.NXDomain)
}

func (c DNSCounts) sub(b DNSCounts) DNSCounts {
	return DNSCounts{Queries: c.Queries - b.Queries, Responses: c.Responses - b.Responses, NXDomain: c.NXDomain - b.NXDomain}
}

// reached: every count is at least want's (counts only grow, so waiting longer cannot help once
// one is above).
func (c DNSCounts) reached(want DNSCounts) bool {
	return c.Queries >= want.Queries && c.Responses >= want.Responses && c.NXDomain >= want.NXDomain
}

// DNSProbeReport is what `isoobs-daemon resolve` prints (one JSON line).
type DNSProbeReport struct {
	Server  string           `json:"server"`
	Results []DNSProbeResult `json:"results"`
}

// DNSProbeResult is one name the probe resolved.
type DNSProbeResult struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Sent: the query left the pod (exactly once; no retries).
	Sent bool `json:"sent"`
	// Rcode of the answer ("" when none came).
	Rcode     string   `json:"rcode,omitempty"`
	Answers   []string `json:"answers,omitempty"`
	LatencyMS float64  `json:"latencyMs"`
	Error     string   `json:"error,omitempty"`
}

// Expected is what every observer must count for the probe pod: the queries it sent, the
// answers it got, the NXDOMAINs among them.
func (r DNSProbeReport) Expected() DNSCounts {
	var c DNSCounts
	for _, res := range r.Results {
		if res.Sent {
			c.Queries++
		}
		if res.Rcode != "" {
			c.Responses++
		}
		if res.Rcode == "NXDOMAIN" {
			c.NXDomain++
		}
	}
	return c
}

// DNSCheckStatus is the `dns` part of `verify --dns -o json`.
type DNSCheckStatus struct {
	Node      string `json:"node"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Image     string `json:"image"`
	// DaemonPod is the isoobs daemon pod of Node ("" if none runs there).
	DaemonPod string `json:"daemonPod,omitempty"`
	// Server is the nameserver the probe asked.
	Server  string           `json:"server,omitempty"`
	Queries []DNSProbeResult `json:"queries"`
	// Expected is what the probe sent and got; the others are what each observer counted
	// for the pod (nil: not read).
	Expected DNSCounts  `json:"expected"`
	Daemon   *DNSCounts `json:"daemon,omitempty"`
	Hubble   *DNSCounts `json:"hubble,omitempty"`
	// Metrics is how much the daemon's isoobs_dns_* series of the pod's namespace/workload rose.
	Metrics *DNSCounts `json:"metrics,omitempty"`
	// Policies are the DNS policies that select the probe pod.
	Policies   []string `json:"policies,omitempty"`
	PodDeleted bool     `json:"podDeleted"`
}

// DNSReport is the outcome of `verify --dns`: the usual report (one result per check) and
// the probe's particulars.
type DNSReport struct {
	*Report
	DNS *DNSCheckStatus `json:"dns"`
}

// WriteJSON writes the report as one indented JSON document.
func (r *DNSReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Format writes a line about the probe pod, then the report's table.
func (r *DNSReport) Format(w io.Writer, opts FormatOptions) error {
	s := r.DNS
	deleted := "deleted"
	if !s.PodDeleted {
		deleted = "NOT deleted: kubectl -n " + s.Namespace + " delete pod " + s.Pod
	}
	if _, err := fmt.Fprintf(w, "probe pod %s/%s on %s (image %s), %s\n\n", s.Namespace, s.Pod, s.Node, s.Image, deleted); err != nil {
		return err
	}
	return r.Report.Format(w, opts)
}

// ErrNoDaemon: the cluster has no isoobs daemon to check against.
var ErrNoDaemon = errors.New("no isoobs daemon")

func (o *DNSCheckOptions) defaults() {
	if o.DaemonNamespace == "" {
		o.DaemonNamespace = cluster.DefaultNamespace
	}
	if o.DaemonSelector == "" {
		o.DaemonSelector = cluster.DefaultSelector
	}
	if o.Namespace == "" {
		o.Namespace = o.DaemonNamespace
	}
	if o.ClusterName == "" {
		o.ClusterName = DefaultDNSClusterName
	}
	if o.NXDomainName == "" {
		o.NXDomainName = DefaultDNSNXDomainName
	}
	if o.ExternalName == "" {
		o.ExternalName = DefaultDNSExternalName
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
}

// ValidateDNSNames checks the three names: DNS names, and different from each other (the
// check tells their answers apart by name).
func ValidateDNSNames(cluster, nx, external string) error {
	seen := map[string]string{}
	for _, n := range []struct{ flag, name string }{{"--dns-cluster-name", cluster}, {"--dns-nxdomain-name", nx}, {"--dns-external-name", external}} {
		name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n.name), "."))
		if err := validDNSName(name); err != nil {
			return fmt.Errorf("%s %q: %v", n.flag, n.name, err)
		}
		if other, dup := seen[name]; dup {
			return fmt.Errorf("%s and %s are both %q: give three different names", other, n.flag, name)
		}
		seen[name] = n.flag
	}
	return nil
}

func validDNSName(n string) error {
	if n == "" {
		return errors.New("empty: give a DNS name such as example.com")
	}
	if len(n) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("each label must have 1 to 63 characters")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q is not allowed in a DNS name", c)
			}
		}
	}
	return nil
}

// daemonOnNode is the node's daemon pod as the check needs it.
type daemonOnNode struct {
	pod *corev1.Pod // nil: none Running there
	dp  cluster.DaemonPod
}

// pickNode finds the node to probe and its daemon. No daemon pod at all is ErrNoDaemon.
func (o *DNSCheckOptions) pickNode(ctx context.Context) (string, daemonOnNode, string, error) {
	list, err := o.Client.CoreV1().Pods(o.DaemonNamespace).List(ctx, metav1.ListOptions{LabelSelector: o.DaemonSelector})
	if err != nil {
		return "", daemonOnNode{}, "", fmt.Errorf("listing the isoobs daemon pods in namespace %s: %w", o.DaemonNamespace, err)
	}
	if len(list.Items) == 0 {
		return "", daemonOnNode{}, "", fmt.Errorf("%w: no pods with labels %s in namespace %s: install the daemons with `kubectl isoobs install --components isoobs --wait`, or point --isoobs-namespace at them",
			ErrNoDaemon, o.DaemonSelector, o.DaemonNamespace)
	}
	pods, _, err := cluster.Discover(ctx, o.Client, cluster.Options{Namespace: o.DaemonNamespace, Selector: o.DaemonSelector})
	if err != nil {
		return "", daemonOnNode{}, "", err
	}
	node := o.Node
	if node == "" {
		for _, p := range pods { // sorted by node
			if p.Ready {
				node = p.Node
				break
			}
		}
		if node == "" {
			return "", daemonOnNode{}, "", fmt.Errorf("%w Ready on any node (namespace %s): kubectl isoobs verify --component isoobs  # says why", ErrNoDaemon, o.DaemonNamespace)
		}
	} else if _, err := o.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return "", daemonOnNode{}, "", fmt.Errorf("--dns-node %s: no such node (kubectl get nodes)", node)
		}
		return "", daemonOnNode{}, "", fmt.Errorf("--dns-node %s: %w", node, err)
	}
	var d daemonOnNode
	for _, p := range pods {
		if p.Node == node {
			d.dp = p
		}
	}
	image := ""
	for i := range list.Items {
		p := &list.Items[i]
		if image == "" || p.Spec.NodeName == node {
			image = daemonImage(p)
		}
		if d.dp.Name != "" && p.Name == d.dp.Name {
			d.pod = p
		}
	}
	return node, d, image, nil
}

// daemonImage is the image of the daemon's container (the one running isoobs-daemon).
func daemonImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if strings.Contains(c.Image, "isoobs-daemon") {
			return c.Image
		}
	}
	if len(p.Spec.Containers) > 0 {
		return p.Spec.Containers[0].Image
	}
	return ""
}

// probePod is the probe's pod: bound to node (no scheduler), every taint tolerated, no
// service account token, non-root with nothing but the UDP socket it needs.
func (o *DNSCheckOptions) probePod(name, node, image string, linger time.Duration) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	labels["app.kubernetes.io/name"] = dnsProbeLabel
	labels["app.kubernetes.io/managed-by"] = "kubectl-isoobs"
	deadline := int64(o.Timeout.Seconds()) + 30
	yes, no := true, false
	uid := int64(65534)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			RestartPolicy:                 corev1.RestartPolicyNever,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: new(int64),
			ActiveDeadlineSeconds:         &deadline,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			DNSPolicy:                     corev1.DNSClusterFirst,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: dnsContainer, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				// The delay lets the node's daemon learn the pod (its namespace and workload)
				// before the first query, so the metrics count it under them; the linger keeps
				// the container's cgroup until the daemon has read its counts (every interval)
				// and resolved the cgroup to the pod (it walks the cgroup tree for unknown ids).
				Args: []string{"resolve", "--delay", "2s", "--linger", linger.String(), "--timeout", "2s", o.ClusterName, o.NXDomainName, o.ExternalName},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
			}},
		},
	}
}

// RunDNSCheck runs the active DNS check. An error means there was nothing to check against
// (no daemon, a bad node) or the probe pod could not be created; everything after that is a
// result in the report. The probe pod is deleted before it returns.
func RunDNSCheck(ctx context.Context, o DNSCheckOptions) (*DNSReport, error) {
	if o.Client == nil {
		return nil, errors.New("verify --dns: no Kubernetes client")
	}
	o.defaults()
	if err := ValidateDNSNames(o.ClusterName, o.NXDomainName, o.ExternalName); err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	node, daemon, image, err := o.pickNode(ctx)
	if err != nil {
		return nil, err
	}
	if o.Image != "" {
		image = o.Image
	}
	if image == "" {
		return nil, fmt.Errorf("no image for the probe: the daemon pods name none; pass --dns-image")
	}
	name := dnsProbePrefix + utilrand.String(5)
	st := &DNSCheckStatus{Node: node, Namespace: o.Namespace, Pod: name, Image: image, DaemonPod: daemon.dp.Name}
	e := newEnv(Options{Client: o.Client, Dynamic: o.Dynamic, Config: o.Config, Namespaces: Namespaces{Isoobs: o.DaemonNamespace}})

	// The metrics before: the series of a new pod's workload should not exist yet, but read them.
	var before *DNSCounts
	var beforeErr error
	if daemon.pod != nil {
		c, err := o.scrapeDNSMetrics(ctx, e, daemon.pod, o.Namespace, name)
		before, beforeErr = &c, err
	}

	// The daemon before anything is started: its port-forward is checked, and its interval
	// says how long the probe must stay (the daemon names a cgroup's counts when it reads its
	// maps, once per interval, while the cgroup directory still exists).
	var conn *cluster.Conn
	var connErr error
	interval := time.Second
	if daemon.pod != nil {
		conn, connErr = o.connect(ctx, daemon.dp)
		if conn != nil {
			defer conn.GRPC.Close()
			if s, err := isoobsv1.NewDaemonClient(conn.GRPC).Status(ctx, &isoobsv1.StatusRequest{}); err == nil && s.GetInterval().AsDuration() > 0 {
				interval = s.GetInterval().AsDuration()
			}
		}
	}
	linger := max(3*time.Second, 2*interval+time.Second)
	o.Settle = max(o.Settle, 3*interval+2*time.Second)

	o.Progress("starting probe pod %s/%s on %s (image %s)", o.Namespace, name, node, image)
	pod := o.probePod(name, node, image, linger)
	// Deleted on every way out, also when the create itself was cut short (Ctrl-C while the
	// request was under way may still leave the pod). A fresh context: the run's may be
	// cancelled or past its deadline.
	created := false
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer dcancel()
		err := o.Client.CoreV1().Pods(o.Namespace).Delete(dctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		st.PodDeleted = err == nil || apierrors.IsNotFound(err)
		if created {
			o.Progress("probe pod %s/%s deleted: %v", o.Namespace, name, st.PodDeleted)
		}
	}()
	if _, err := o.Client.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the probe pod %s/%s: %w (kubectl auth can-i create pods -n %s)", o.Namespace, name, err, o.Namespace)
	}
	created = true

	results := []Result{}
	timed := func(id, cname string, t0 time.Time, r Result) Result {
		r.ID, r.Component, r.Name, r.DurationMS = id, ComponentDNS, cname, time.Since(t0).Milliseconds()
		return r
	}
	t0 := time.Now()
	rep, probeRes := o.runProbe(ctx, name)
	results = append(results, timed(DNSIDProbe, "Probe pod resolves", t0, probeRes))
	if rep == nil {
		for _, c := range []struct{ id, name string }{{DNSIDDaemon, "Daemon counted"}, {DNSIDHubble, "Hubble saw"}, {DNSIDMetrics, "Metrics exported"}} {
			results = append(results, timed(c.id, c.name, t0, Result{Status: StatusSkip, Detail: "not checked: the probe did not report"}))
		}
		return &DNSReport{Report: NewReport(results, time.Since(start)), DNS: st}, nil
	}
	st.Server, st.Queries, st.Expected = rep.Server, rep.Results, rep.Expected()
	want := st.Expected
	o.Progress("probe sent %s; reading the daemon on %s", want, node)

	// The three observers, at once: each waits up to Settle for its counts.
	settle, scancel := context.WithTimeout(ctx, o.Settle)
	defer scancel()
	var wg sync.WaitGroup
	var daemonRes, hubbleRes, metricsRes Result
	t0 = time.Now()
	wg.Add(3)
	go func() {
		defer wg.Done()
		var got *DNSCounts
		var err error
		if conn != nil {
			got, err = readPodCounts(settle, isoobsv1.NewDaemonClient(conn.GRPC), o.Namespace, name, isoobsv1.Source_SOURCE_EBPF, want)
		}
		st.Daemon = got
		daemonRes = timed(DNSIDDaemon, "Daemon counted", t0, judgeDaemon(want, got, firstErr(connErr, err), o.daemonHints(node, daemon)))
	}()
	go func() {
		defer wg.Done()
		res, got, policies := o.hubbleCheck(settle, e, conn, connErr, node, daemon, name, want)
		st.Hubble, st.Policies = got, policies
		hubbleRes = timed(DNSIDHubble, "Hubble saw", t0, res)
	}()
	go func() {
		defer wg.Done()
		var after *DNSCounts
		err := beforeErr
		if daemon.pod != nil && err == nil {
			var c DNSCounts
			c, err = o.waitMetrics(settle, e, daemon.pod, name, *before, want)
			after = &c
		}
		var rose *DNSCounts
		if after != nil {
			d := after.sub(*before)
			rose = &d
		}
		st.Metrics = rose
		metricsRes = timed(DNSIDMetrics, "Metrics exported", t0, judgeMetrics(want, rose, err, o.metricsHints(node, daemon, name)))
	}()
	wg.Wait()
	results = append(results, daemonRes, hubbleRes, metricsRes)
	return &DNSReport{Report: NewReport(results, time.Since(start)), DNS: st}, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// runProbe waits for the probe pod to end and reads its report from the log.
func (o *DNSCheckOptions) runProbe(ctx context.Context, name string) (*DNSProbeReport, Result) {
	pods := o.Client.CoreV1().Pods(o.Namespace)
	var last *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	describe := fmt.Sprintf("kubectl -n %s describe pod %s  # rerun with --dns-timeout 3m if the node is slow to start it", o.Namespace, name)
	if err != nil {
		state := "not created"
		if last != nil {
			state = podState(last)
			for _, cs := range last.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && w.Message != "" {
					state += ": " + w.Message
				}
			}
		}
		return nil, Result{Status: StatusFail, Detail: fmt.Sprintf("the probe pod did not finish (%s): %v", state, err), Next: describe}
	}
	logs, lerr := pods.GetLogs(name, &corev1.PodLogOptions{Container: dnsContainer}).DoRaw(ctx)
	if lerr != nil {
		return nil, Result{Status: StatusFail, Detail: fmt.Sprintf("reading the probe's log: %v", lerr), Next: describe}
	}
	rep, perr := ParseDNSProbeLog(logs)
	if last.Status.Phase == corev1.PodFailed || perr != nil {
		msg := strings.TrimSpace(string(logs))
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		detail := fmt.Sprintf("the probe pod ended %s: %s", podState(last), msg)
		if perr != nil {
			detail += " (" + perr.Error() + ")"
		}
		return nil, Result{Status: StatusFail, Detail: detail,
			Next: "kubectl isoobs version  # the probe needs a daemon image with `isoobs-daemon resolve` (this release's); or pass --dns-image"}
	}
	return rep, judgeProbe(*rep, o.ClusterName, o.NXDomainName, o.ExternalName)
}

// ParseDNSProbeLog reads the probe's JSON report from its log (the last line that is one).
func ParseDNSProbeLog(logs []byte) (*DNSProbeReport, error) {
	lines := bytes.Split(bytes.TrimSpace(logs), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := bytes.TrimSpace(lines[i])
		if len(l) == 0 || l[0] != '{' {
			continue
		}
		var r DNSProbeReport
		if err := json.Unmarshal(l, &r); err != nil {
			return nil, fmt.Errorf("the probe's report: %w", err)
		}
		return &r, nil
	}
	return nil, errors.New("no report in the probe's log")
}

func (o *DNSCheckOptions) connect(ctx context.Context, dp cluster.DaemonPod) (*cluster.Conn, error) {
	dial := o.dial
	if dial == nil {
		d, err := cluster.NewPortForwardDialer(o.Config)
		if err != nil {
			return nil, err
		}
		dial = d.Dial
	}
	conns, missing, err := cluster.Connect(ctx, []cluster.DaemonPod{dp}, dial, cluster.Options{Namespace: o.DaemonNamespace, Selector: o.DaemonSelector})
	if err != nil {
		return nil, err
	}
	if len(conns) == 0 {
		reason := "no connection"
		if len(missing) > 0 {
			reason = missing[0].Reason
		}
		return nil, fmt.Errorf("port-forward to %s: %s", dp, reason)
	}
	return &conns[0], nil
}

// readPodCounts reads the pod's row from the daemon's Top stream (counts since the daemon
// started, which for a new pod are all of its DNS) until it reaches want or ctx ends, and
// returns the last counts seen (nil if the pod never had a row).
func readPodCounts(ctx context.Context, c isoobsv1.DaemonClient, namespace, pod string, source isoobsv1.Source, want DNSCounts) (*DNSCounts, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Top(sctx, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DNS, GroupBy: isoobsv1.GroupBy_GROUP_BY_POD,
		Namespace: namespace, Pod: pod, Source: source, Limit: 10})
	if err != nil {
		return nil, err
	}
	var got *DNSCounts
	for {
		f, err := stream.Recv()
		if err != nil {
			// Waited the settle time: the last counts are the answer. gRPC's own deadline timer
			// can end the stream a moment before ctx says so.
			if c := status.Code(err); ctx.Err() != nil || c == codes.DeadlineExceeded || c == codes.Canceled {
				return got, nil
			}
			return got, err
		}
		for _, r := range f.GetRows() {
			if r.GetNamespace() == namespace && r.GetPod() == pod {
				got = &DNSCounts{Queries: r.GetQueries(), Responses: r.GetResponses(), NXDomain: r.GetNxdomain()}
			}
		}
		if got != nil && got.reached(want) {
			return got, nil
		}
	}
}

// daemonHints are the commands to run when the daemon's counts are wrong.
type daemonHints struct {
	none, unreachable, wrong string
}

func (o *DNSCheckOptions) daemonHints(node string, d daemonOnNode) daemonHints {
	ns := o.DaemonNamespace
	h := daemonHints{
		none: fmt.Sprintf("kubectl -n %s get daemonset,pods -o wide  # no isoobs daemon runs on %s: does its DaemonSet tolerate the node's taints? kubectl isoobs install --components isoobs --wait", ns, node),
	}
	if d.pod != nil {
		h.unreachable = fmt.Sprintf("kubectl isoobs status --node %s; kubectl -n %s logs %s", node, ns, d.pod.Name)
		h.wrong = fmt.Sprintf("kubectl isoobs status --node %s  # probes attached? map overflow or lost counts? then kubectl -n %s logs %s", node, ns, d.pod.Name)
	}
	return h
}

// judgeDaemon: the daemon must have counted exactly what the probe sent and got.
func judgeDaemon(want DNSCounts, got *DNSCounts, err error, h daemonHints) Result {
	switch {
	case h.unreachable == "":
		return Result{Status: StatusFail, Detail: "no isoobs daemon runs on the probe's node: nobody counted its " + want.String(), Next: h.none}
	case err != nil:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("cannot read the daemon: %v", err), Next: h.unreachable}
	case got == nil:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("the daemon has no row for the probe pod; it sent %s", want), Next: h.wrong}
	case *got != want:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("the daemon counted %s; the probe sent %s", got, want), Next: h.wrong}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("counted exactly the probe's %s", want)}
}

// hubbleCheck: where a DNS policy selects the probe pod, Hubble (as the node's daemon merges
// it) must have seen its queries.
func (o *DNSCheckOptions) hubbleCheck(ctx context.Context, e *env, conn *cluster.Conn, connErr error, node string, d daemonOnNode, name string, want DNSCounts) (Result, *DNSCounts, []string) {
	if e.Dynamic == nil {
		return Result{Status: StatusSkip, Detail: "not checked: no dynamic client to read DNS policies"}, nil, nil
	}
	pod, err := o.Client.CoreV1().Pods(o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return apiErr("reading the probe pod", err), nil, nil
	}
	sels, err := e.dnsSelectors(ctx)
	if apierrors.IsNotFound(err) {
		return judgeHubble(want, nil, nil, nil, hubbleHints{}), nil, nil // no CRD, no policy
	}
	if err != nil {
		return apiErr("listing CiliumNetworkPolicies", err), nil, nil
	}
	var policies []string
	for _, s := range sels {
		if selects(s, pod) {
			policies = append(policies, s.policy)
		}
	}
	if len(policies) == 0 {
		return judgeHubble(want, nil, nil, nil, hubbleHints{}), nil, nil
	}
	h := hubbleHints{node: node, namespace: o.Namespace, pod: name}
	if d.pod == nil {
		h.noDaemon = true
	} else {
		h.off = hubbleDisabled(d.pod)
		h.daemon = d.pod.Name
	}
	var got *DNSCounts
	err = connErr
	if conn != nil && !h.off {
		got, err = readPodCounts(ctx, isoobsv1.NewDaemonClient(conn.GRPC), o.Namespace, name, isoobsv1.Source_SOURCE_HUBBLE, want)
	}
	return judgeHubble(want, got, err, policies, h), got, policies
}

type hubbleHints struct {
	noDaemon, off                bool
	node, namespace, pod, daemon string
}

// judgeHubble: no policy → not checked; else Hubble's counts must equal the probe's.
func judgeHubble(want DNSCounts, got *DNSCounts, err error, policies []string, h hubbleHints) Result {
	if len(policies) == 0 {
		return Result{Status: StatusSkip, Detail: "not checked: no DNS policy selects the probe pod (Hubble sees DNS only under a CiliumNetworkPolicy with dns rules; run with --dns-namespace/--dns-labels of a workload under one to check it)"}
	}
	pol := strings.Join(policies, ", ")
	observe := fmt.Sprintf("hubble observe --pod %s/%s --protocol dns", h.namespace, h.pod)
	switch {
	case h.noDaemon:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s selects the probe pod, but no isoobs daemon on its node reads Hubble", pol),
			Items: []string{observe}, Next: "kubectl isoobs install --components isoobs --wait"}
	case h.off:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s selects the probe pod, but the daemon %s runs with --hubble-server=off", pol, h.daemon),
			Next: fmt.Sprintf("kubectl isoobs install --components isoobs  # on a cluster with Cilium it points the daemons at Hubble's socket; then kubectl isoobs status --node %s", h.node)}
	case err != nil:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("cannot read Hubble's counts from the daemon: %v", err), Next: fmt.Sprintf("kubectl isoobs status --node %s", h.node)}
	case got == nil || *got != want:
		seen := "nothing"
		if got != nil {
			seen = got.String()
		}
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s selects the probe pod; Hubble reported %s, the probe sent %s", pol, seen, want),
			Next: fmt.Sprintf("kubectl isoobs status --node %s  # Hubble connected? lost events? and %s", h.node, observe)}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("Hubble saw exactly the probe's %s (%s selects it)", want, pol)}
}

// scrapeDNSMetrics reads the daemon's isoobs_dns_* series of one namespace/workload.
func (o *DNSCheckOptions) scrapeDNSMetrics(ctx context.Context, e *env, daemon *corev1.Pod, namespace, workload string) (DNSCounts, error) {
	body, err := e.proxyGet(ctx, daemon, "", PortIsoobs, "metrics")
	if err != nil {
		return DNSCounts{}, fmt.Errorf("scraping %s/%s:%d/metrics: %w", daemon.Namespace, daemon.Name, PortIsoobs, err)
	}
	defer body.Close()
	return DNSMetricCounts(io.LimitReader(body, 64<<20), namespace, workload)
}

// waitMetrics scrapes until the series rose by want or ctx ends; it returns the last scrape.
func (o *DNSCheckOptions) waitMetrics(ctx context.Context, e *env, daemon *corev1.Pod, workload string, before, want DNSCounts) (DNSCounts, error) {
	var last DNSCounts
	var lastErr error
	for {
		c, err := o.scrapeDNSMetrics(ctx, e, daemon, o.Namespace, workload)
		if err == nil {
			last, lastErr = c, nil
			if c.sub(before).reached(want) {
				return c, nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, lastErr
			}
			return last, nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// DNSMetricCounts sums the isoobs_dns_queries_total and isoobs_dns_responses_total series (by
// rcode) of one namespace/workload in a Prometheus text exposition.
func DNSMetricCounts(r io.Reader, namespace, workload string) (DNSCounts, error) {
	var c DNSCounts
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		var field *uint64
		switch {
		case strings.HasPrefix(line, "isoobs_dns_queries_total{"):
			field = &c.Queries
		case strings.HasPrefix(line, "isoobs_dns_responses_total{"):
			field = &c.Responses
		default:
			continue
		}
		open := strings.IndexByte(line, '{')
		labels, rest, ok := parseLabels(line[open+1:])
		if !ok || labels["namespace"] != namespace || labels["workload"] != workload {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil || v < 0 {
			continue
		}
		*field += uint64(v)
		if field == &c.Responses && labels["rcode"] == "NXDOMAIN" {
			c.NXDomain += uint64(v)
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("reading metrics: %w", err)
	}
	return c, nil
}

// parseLabels reads `a="x",b="y"}` (after the opening brace) and returns the labels and what
// follows the closing brace.
func parseLabels(s string) (map[string]string, string, bool) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], true
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, "", false
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var val strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, "", false
		}
		labels[key] = val.String()
		s = s[i+1:]
	}
}

// metricsHints are the commands to run when the metrics did not rise as they should.
type metricsHints struct{ none, scrape string }

func (o *DNSCheckOptions) metricsHints(node string, d daemonOnNode, workload string) metricsHints {
	h := metricsHints{none: o.daemonHints(node, d).none}
	if d.pod != nil {
		h.scrape = fmt.Sprintf("kubectl get --raw /api/v1/namespaces/%s/pods/%s:%d/proxy/metrics | grep 'isoobs_dns_.*namespace=\"%s\",workload=\"%s\"'",
			d.pod.Namespace, d.pod.Name, PortIsoobs, o.Namespace, workload)
	}
	return h
}

// judgeMetrics: the namespace/workload series must have risen by exactly what the probe sent.
func judgeMetrics(want DNSCounts, rose *DNSCounts, err error, h metricsHints) Result {
	switch {
	case h.scrape == "":
		return Result{Status: StatusFail, Detail: "no isoobs daemon runs on the probe's node: no metrics count its " + want.String(), Next: h.none}
	case err != nil:
		return Result{Status: StatusFail, Detail: err.Error(), Next: h.scrape}
	case rose == nil || *rose != want:
		seen := "did not rise"
		if rose != nil {
			seen = "rose by " + rose.String()
		}
		return Result{Status: StatusFail, Detail: fmt.Sprintf("isoobs_dns_* of the probe's namespace/workload %s; the probe sent %s", seen, want),
			Next: h.scrape + "  # a series under namespace=\"unknown\" means the daemon did not know the pod yet (kubectl isoobs status: kubernetes connected?)"}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("isoobs_dns_queries_total and isoobs_dns_responses_total of the probe's namespace/workload rose by exactly %s", want)}
}

// judgeProbe: the names resolved as they must — the in-cluster and external names to an
// address, the NXDOMAIN name to NXDOMAIN. A name that did not is DNS itself failing (the
// counting checks still compare against what the probe got).
func judgeProbe(rep DNSProbeReport, clusterName, nxName, externalName string) Result {
	norm := func(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) }
	var items, bad []string
	next := ""
	for _, r := range rep.Results {
		line := fmt.Sprintf("%s %s: ", r.Name, r.Type)
		switch {
		case !r.Sent:
			line += "not sent: " + r.Error
		case r.Rcode == "":
			line += r.Error
		default:
			addrs := ""
			if len(r.Answers) > 0 {
				addrs = " " + strings.Join(r.Answers, ",")
			}
			line += fmt.Sprintf("%s, %d answer(s)%s in %.1fms", r.Rcode, len(r.Answers), addrs, r.LatencyMS)
		}
		items = append(items, line)
		var want string
		switch norm(r.Name) {
		case norm(clusterName), norm(externalName):
			want = "NOERROR"
		case norm(nxName):
			want = "NXDOMAIN"
		}
		ok := r.Rcode == want && (want != "NOERROR" || len(r.Answers) > 0)
		if !ok {
			what := "an answer"
			if want == "NXDOMAIN" {
				what = "NXDOMAIN"
			}
			got := r.Rcode
			if got == "" {
				got = r.Error
			} else if r.Rcode == "NOERROR" && want == "NOERROR" {
				got = "NOERROR without an address"
			}
			bad = append(bad, fmt.Sprintf("%s: %s, want %s", r.Name, got, what))
			if next == "" {
				switch norm(r.Name) {
				case norm(externalName):
					next = fmt.Sprintf("kubectl -n kube-system get configmap coredns -o yaml  # does CoreDNS forward to an upstream that resolves %s?", r.Name)
				default:
					next = "kubectl -n kube-system get pods,endpoints -l k8s-app=kube-dns -o wide; kubectl -n kube-system logs -l k8s-app=kube-dns"
				}
			}
		}
	}
	sent := rep.Expected()
	if len(rep.Results) != 3 {
		bad = append(bad, fmt.Sprintf("%d names in the report, want 3", len(rep.Results)))
	}
	if len(bad) > 0 {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("asked %s: %s", rep.Server, strings.Join(bad, "; ")), Items: items, Next: next}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("asked %s: %d queries, %d answers, %d NXDOMAIN, as expected", rep.Server, sent.Queries, sent.Responses, sent.NXDomain), Items: items}
}
