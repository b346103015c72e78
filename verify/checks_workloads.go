package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/isoobs/isoobs/k8s"
)

// AllChecks lists every check in display order.
func AllChecks() []Check {
	return []Check{
		{ID: "cluster/apiserver", Component: "cluster", Name: "API server", Run: checkAPIServer},
		{ID: "cluster/nodes", Component: "cluster", Name: "Nodes Ready", Run: checkNodes},
		{ID: "cilium/agent", Component: "cilium", Name: "cilium agent DaemonSet", Run: perNodeCheck(nsCilium, LabelCiliumAgent, "cilium", true)},
		{ID: "cilium/operator", Component: "cilium", Name: "cilium operator", Run: deploymentCheck(nsCilium, LabelCiliumOperator, "cilium-operator", true)},
		{ID: "cilium/envoy", Component: "cilium", Name: "cilium-envoy DaemonSet", Run: perNodeCheck(nsCilium, LabelCiliumEnvoy, "cilium-envoy", false)},
		{ID: "hubble/relay", Component: "hubble", Name: "Hubble Relay", Run: checkRelay},
		{ID: "hubble/ui", Component: "hubble", Name: "Hubble UI", Run: deploymentCheck(nsCilium, LabelHubbleUI, "hubble-ui", false)},
		{ID: "tetragon/agent", Component: "tetragon", Name: "Tetragon DaemonSet", Run: perNodeCheck(nsTetragon, LabelTetragon, "tetragon", true)},
		{ID: "tetragon/operator", Component: "tetragon", Name: "Tetragon operator", Run: deploymentCheck(nsTetragon, LabelTetragonOp, "tetragon-operator", true)},
		{ID: "dnsproxy/ha", Component: "dnsproxy", Name: "DNS Proxy HA", Run: checkDNSProxy},
		{ID: "config/cilium-config", Component: "config", Name: "cilium-config", Run: checkCiliumConfig},
		{ID: "metrics/cilium-agent", Component: "metrics", Name: "cilium-agent :9962", Run: metricsCheck(endpointAgent)},
		{ID: "metrics/cilium-operator", Component: "metrics", Name: "cilium-operator :9963", Run: metricsCheck(endpointOperator)},
		{ID: "metrics/cilium-envoy", Component: "metrics", Name: "cilium-envoy :9964", Run: metricsCheck(endpointEnvoy)},
		{ID: "metrics/hubble", Component: "metrics", Name: "hubble metrics :9965", Run: metricsCheck(endpointHubble)},
		{ID: "metrics/tetragon", Component: "metrics", Name: "tetragon :2112", Run: metricsCheck(endpointTetragon)},
		{ID: "l7/dns-visibility", Component: "l7", Name: "DNS L7 visibility", Run: checkDNSVisibility},
		{ID: "pipeline/metrics", Component: "pipeline", Name: "metrics pipeline", Run: checkPipeline},
		{ID: "isoobs/daemons", Component: "isoobs", Name: "isoobs daemons", Run: checkIsoobsDaemons},
	}
}

func nsCilium(e *env) string   { return e.Namespaces.Cilium }
func nsTetragon(e *env) string { return e.Namespaces.Tetragon }
func nsIsoobs(e *env) string   { return e.Namespaces.Isoobs }

func checkAPIServer(ctx context.Context, e *env) Result {
	type answer struct {
		v   string
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		v, err := e.Client.Discovery().ServerVersion()
		if err != nil {
			ch <- answer{err: err}
			return
		}
		ch <- answer{v: v.GitVersion}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			return Result{Status: StatusFail, Detail: "unreachable: " + a.err.Error(), Next: "kubectl cluster-info  # check --context/--kubeconfig"}
		}
		return Result{Status: StatusOK, Detail: "reachable, " + a.v}
	case <-ctx.Done():
		return Result{Status: StatusFail, Detail: "no answer: " + ctx.Err().Error(), Next: "kubectl cluster-info"}
	}
}

func checkNodes(ctx context.Context, e *env) Result {
	nodes, err := e.nodes(ctx)
	if err != nil {
		return apiErr("listing nodes", err)
	}
	if len(nodes) == 0 {
		return Result{Status: StatusFail, Detail: "the cluster has no nodes", Next: "kubectl get nodes"}
	}
	var notReady []string
	for _, n := range nodes {
		if !nodeReady(&n) {
			notReady = append(notReady, n.Name+": "+nodeCondition(&n))
		}
	}
	if len(notReady) > 0 {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%d/%d Ready", len(nodes)-len(notReady), len(nodes)), Items: notReady,
			Next: "kubectl describe node " + strings.SplitN(notReady[0], ":", 2)[0]}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("%d/%d Ready", len(nodes), len(nodes))}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func nodeCondition(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Reason != "" {
				return fmt.Sprintf("Ready=%s (%s)", c.Status, c.Reason)
			}
			return "Ready=" + string(c.Status)
		}
	}
	return "no Ready condition"
}

// images lists the distinct container images of a pod template.
func images(spec corev1.PodSpec) string {
	var out []string
	for _, c := range spec.Containers {
		img := c.Image
		if i := strings.Index(img, "@sha256:"); i >= 0 {
			img = img[:i] // the digest says nothing a reader needs here
		}
		if !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	return strings.Join(out, ", ")
}

// perNodeCheck checks a DaemonSet that must run one Ready pod on every node
// (Cilium, envoy, Tetragon and isoobs all tolerate every taint). required:
// its absence fails; otherwise it warns.
func perNodeCheck(ns func(*env) string, selector, name string, required bool) func(context.Context, *env) Result {
	return func(ctx context.Context, e *env) Result {
		return daemonSetResult(ctx, e, ns(e), selector, name, required)
	}
}

func daemonSetResult(ctx context.Context, e *env, ns, selector, name string, required bool) Result {
	dss, err := e.daemonSets(ctx, ns, selector)
	if err != nil {
		return apiErr("listing DaemonSets", err)
	}
	if len(dss) == 0 {
		st := StatusWarn
		if required {
			st = StatusFail
		}
		return Result{Status: st, Detail: fmt.Sprintf("no DaemonSet labelled %s in namespace %s", selector, ns),
			Next: fmt.Sprintf("kubectl get ds -A -l %s  # installed elsewhere? else: kubectl isoobs install", selector)}
	}
	ds := dss[0]
	pods, err := e.pods(ctx, ns, selector)
	if err != nil {
		return apiErr("listing pods", err)
	}
	nodes, err := e.nodes(ctx)
	if err != nil {
		return apiErr("listing nodes", err)
	}
	problems, readyNodes := perNodeProblems(pods, nodes)
	st := ds.Status
	detail := fmt.Sprintf("desired %d, ready %d, available %d, on %d/%d nodes; %s",
		st.DesiredNumberScheduled, st.NumberReady, st.NumberAvailable, readyNodes, len(nodes), images(ds.Spec.Template.Spec))
	if len(problems) > 0 {
		first := problems[0]
		return Result{Status: StatusFail, Detail: detail, Items: problems.lines(),
			Next: first.next(ns, ds.Name, selector)}
	}
	if st.NumberReady < st.DesiredNumberScheduled || st.NumberAvailable < st.DesiredNumberScheduled {
		return Result{Status: StatusWarn, Detail: detail + " (rolling out?)", Next: fmt.Sprintf("kubectl -n %s rollout status ds/%s", ns, ds.Name)}
	}
	return Result{Status: StatusOK, Detail: detail}
}

type nodeProblem struct {
	node, pod, state string
}

type nodeProblems []nodeProblem

func (ps nodeProblems) lines() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if p.pod == "" {
			out[i] = p.node + ": no pod"
		} else {
			out[i] = fmt.Sprintf("%s: %s %s", p.node, p.pod, p.state)
		}
	}
	return out
}

func (p nodeProblem) next(ns, ds, selector string) string {
	if p.pod == "" {
		return fmt.Sprintf("kubectl -n %s describe ds %s  # nodeSelector/affinity/tolerations leave out node %s?", ns, ds, p.node)
	}
	return fmt.Sprintf("kubectl -n %s describe pod %s; kubectl -n %s logs %s", ns, p.pod, ns, p.pod)
}

// perNodeProblems names every node without a Ready pod of the set.
func perNodeProblems(pods []corev1.Pod, nodes []corev1.Node) (nodeProblems, int) {
	byNode := map[string][]*corev1.Pod{}
	for i := range pods {
		byNode[pods[i].Spec.NodeName] = append(byNode[pods[i].Spec.NodeName], &pods[i])
	}
	var problems nodeProblems
	ready := 0
	for _, n := range nodes {
		ps := byNode[n.Name]
		if len(ps) == 0 {
			problems = append(problems, nodeProblem{node: n.Name})
			continue
		}
		ok := false
		for _, p := range ps {
			if k8s.PodReady(p) {
				ok = true
			}
		}
		if ok {
			ready++
			continue
		}
		problems = append(problems, nodeProblem{node: n.Name, pod: ps[0].Name, state: podState(ps[0])})
	}
	return problems, ready
}

// deploymentCheck checks a Deployment has all replicas ready.
func deploymentCheck(ns func(*env) string, selector, name string, required bool) func(context.Context, *env) Result {
	return func(ctx context.Context, e *env) Result {
		r, _ := deploymentResult(ctx, e, ns(e), selector, name, required)
		return r
	}
}

func deploymentResult(ctx context.Context, e *env, ns, selector, name string, required bool) (Result, *appsv1.Deployment) {
	ds, err := e.deployments(ctx, ns, selector)
	if err != nil {
		return apiErr("listing Deployments", err), nil
	}
	if len(ds) == 0 {
		st := StatusWarn
		if required {
			st = StatusFail
		}
		return Result{Status: st, Detail: fmt.Sprintf("no Deployment labelled %s in namespace %s", selector, ns),
			Next: fmt.Sprintf("kubectl get deploy -A -l %s  # installed elsewhere? else: kubectl isoobs install", selector)}, nil
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
	d := &ds[0]
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	detail := fmt.Sprintf("%s: desired %d, ready %d/%d, available %d/%d; %s", d.Name, want, st.ReadyReplicas, want, st.AvailableReplicas, want, images(d.Spec.Template.Spec))
	if want == 0 {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s is scaled to 0 replicas", d.Name),
			Next: fmt.Sprintf("kubectl -n %s scale deploy/%s --replicas=1", ns, d.Name)}, d
	}
	if st.ReadyReplicas == 0 {
		return Result{Status: StatusFail, Detail: detail,
			Next: fmt.Sprintf("kubectl -n %s describe deploy/%s; kubectl -n %s logs deploy/%s", ns, d.Name, ns, d.Name)}, d
	}
	if st.ReadyReplicas < want {
		return Result{Status: StatusWarn, Detail: detail, Next: fmt.Sprintf("kubectl -n %s rollout status deploy/%s", ns, d.Name)}, d
	}
	return Result{Status: StatusOK, Detail: detail}, d
}

func checkDNSProxy(ctx context.Context, e *env) Result {
	if e.edition(ctx) != "enterprise" {
		return Result{Status: StatusSkip, Detail: "OSS Cilium: DNS Proxy HA is an Isovalent Enterprise feature"}
	}
	r := daemonSetResult(ctx, e, e.Namespaces.Cilium, LabelDNSProxy, "cilium-dnsproxy", true)
	cfg, _ := e.ciliumConfig(ctx)
	if r.Status == StatusOK && cfg != nil && cfg["external-dns-proxy"] != "true" {
		return Result{Status: StatusWarn, Detail: r.Detail + "; but cilium-config external-dns-proxy is not \"true\": the agent keeps its own proxy",
			Next: "helm upgrade cilium isovalent/cilium -n kube-system --reuse-values --set extraConfig.external-dns-proxy=true"}
	}
	return r
}
