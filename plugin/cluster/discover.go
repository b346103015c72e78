// Package cluster finds the isoobs daemon pods of a cluster and reaches each
// one through the Kubernetes API server's pods/portforward subresource, so
// `kubectl isoobs top` works with nothing but the user's own kubeconfig and
// RBAC: no daemon listens on the node network.
package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/isoobs/isoobs/k8s"
	"github.com/isoobs/isoobs/plugin/top"
)

// Defaults match the daemon chart in deploy/chart as `kubectl isoobs install`
// installs it (namespace install/values.NamespaceIsoobs; a test keeps them equal).
const (
	DefaultNamespace = "isoobs"
	// DefaultSelector is the chart's selector labels minus the release name,
	// so any release of the chart is found.
	DefaultSelector = "app.kubernetes.io/name=isoobs,app.kubernetes.io/component=daemon"
	// DefaultPort is the daemon's loopback gRPC port inside its pod (chart value grpc.port).
	DefaultPort = 9967
	// GRPCPortName is the container port name that overrides DefaultPort when a pod declares it.
	GRPCPortName          = "grpc"
	DefaultConcurrency    = 32
	DefaultConnectTimeout = 5 * time.Second
)

// Options say where the daemons are and how to reach them.
type Options struct {
	// Namespace and Selector find the daemon pods.
	Namespace string
	Selector  string
	// Port is the daemon's gRPC port in its pod, unless the pod names one GRPCPortName.
	Port int
	// Nodes restricts the fan-out to these nodes (empty: every node with a daemon pod).
	Nodes []string
	// Concurrency bounds the connections being set up at once.
	Concurrency int
	// ConnectTimeout bounds each node's connection set-up.
	ConnectTimeout time.Duration
	// TokenFile holds a token for audience TenantAudience, sent to every daemon (daemons run
	// with --tenant-authorization require it on port-forwarded connections).
	TokenFile string
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Selector == "" {
		o.Selector = DefaultSelector
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	return o
}

// DaemonPod is the daemon pod chosen for one node.
type DaemonPod struct {
	Node      string
	Namespace string
	Name      string
	// Port is the daemon's gRPC port inside the pod.
	Port  int
	Ready bool
}

func (p DaemonPod) String() string { return p.Namespace + "/" + p.Name }

// Discover lists the daemon pods and picks one per node: a Running pod,
// Ready ones first, then the newest. Nodes whose daemon pod is not running,
// and --node names without a daemon pod, come back as missing with the
// reason. An error means nothing can be shown (no permission, no daemons).
func Discover(ctx context.Context, client kubernetes.Interface, opts Options) ([]DaemonPod, []top.MissingNode, error) {
	opts = opts.withDefaults()
	if _, err := labels.Parse(opts.Selector); err != nil {
		return nil, nil, fmt.Errorf("invalid --daemon-selector %q: %v", opts.Selector, err)
	}
	list, err := client.CoreV1().Pods(opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: opts.Selector})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, nil, &PermissionError{Verb: "list", Resource: "pods", Namespace: opts.Namespace, Why: "to find the isoobs daemon pods", APIError: err}
		}
		if _, isAPIStatus := err.(apierrors.APIStatus); !isAPIStatus {
			return nil, nil, fmt.Errorf("cannot reach the Kubernetes API server to find the isoobs daemon pods: %w "+
				"(check --kubeconfig/--context; or read one daemon with --daemon ADDR, or run the probes on this host with --local)", err)
		}
		return nil, nil, fmt.Errorf("listing isoobs daemon pods in namespace %s: %w", opts.Namespace, err)
	}

	byNode := map[string][]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	if len(byNode) == 0 {
		return nil, nil, fmt.Errorf("no isoobs daemon pods (labels %s) in namespace %s: install the daemon with `kubectl isoobs install` "+
			"(or `helm install isoobs deploy/chart -n %s --create-namespace`), point --daemon-namespace/--daemon-selector at an existing install, "+
			"or read one daemon directly with --daemon ADDR", opts.Selector, opts.Namespace, DefaultNamespace)
	}

	nodes := opts.Nodes
	if len(nodes) == 0 {
		for n := range byNode {
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	nodes = slices.Compact(nodes)

	var pods []DaemonPod
	var missing []top.MissingNode
	for _, node := range nodes {
		candidates := byNode[node]
		if len(candidates) == 0 {
			missing = append(missing, top.MissingNode{Node: node, Reason: fmt.Sprintf("no isoobs daemon pod on this node (namespace %s, labels %s)", opts.Namespace, opts.Selector)})
			continue
		}
		best := pickPod(candidates)
		if best.Status.Phase != corev1.PodRunning {
			missing = append(missing, top.MissingNode{Node: node, Reason: fmt.Sprintf("daemon pod %s/%s is %s%s", best.Namespace, best.Name, best.Status.Phase, waitingReason(best))})
			continue
		}
		pods = append(pods, DaemonPod{Node: node, Namespace: best.Namespace, Name: best.Name, Port: grpcPort(best, opts.Port), Ready: k8s.PodReady(best)})
	}
	return pods, missing, nil
}

// pickPod prefers Running, then Ready, then the newest pod (a rolling update
// may briefly leave two on a node).
func pickPod(pods []*corev1.Pod) *corev1.Pod {
	rank := func(p *corev1.Pod) int {
		r := 0
		if p.Status.Phase == corev1.PodRunning {
			r += 2
		}
		if k8s.PodReady(p) {
			r++
		}
		return r
	}
	best := pods[0]
	for _, p := range pods[1:] {
		if rank(p) > rank(best) || rank(p) == rank(best) && p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	return best
}

// waitingReason adds a container's waiting reason (CrashLoopBackOff, ...).
func waitingReason(p *corev1.Pod) string {
	var reasons []string
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			reasons = append(reasons, w.Reason)
		}
	}
	if len(reasons) == 0 {
		return ""
	}
	return " (" + strings.Join(reasons, ", ") + ")"
}

func grpcPort(p *corev1.Pod, def int) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == GRPCPortName && port.ContainerPort > 0 {
				return int(port.ContainerPort)
			}
		}
	}
	return def
}

// PermissionError says which RBAC permission the user lacks and what to ask for.
type PermissionError struct {
	Verb, Resource, Namespace string
	// User is who the API server says is asking (empty if unknown).
	User string
	// Why says what the permission is needed for.
	Why      string
	APIError error
}

func (e *PermissionError) Error() string {
	who := "you are"
	if e.User != "" {
		who = fmt.Sprintf("user %q is", e.User)
	}
	group, resource, _ := strings.Cut(e.Resource, "/")
	subresource := ""
	if resource != "" {
		subresource = "/" + resource
	}
	return fmt.Sprintf("%s not allowed to %s %s in namespace %s, which kubectl isoobs needs %s. "+
		"Ask a cluster admin for a Role in namespace %s with the rule {apiGroups: [\"\"], resources: [\"%s%s\"], verbs: [\"%s\"]} bound to you "+
		"(check with: kubectl auth can-i %s %s -n %s), or read one daemon you can reach with --daemon ADDR",
		who, e.Verb, e.Resource, e.Namespace, e.Why, e.Namespace, group, subresource, e.Verb, e.Verb, e.Resource, e.Namespace)
}

func (e *PermissionError) Unwrap() error { return e.APIError }
