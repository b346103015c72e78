package verify

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isoobs/isoobs/k8s"
)

// Labels the stack's objects carry (the Cilium and Tetragon charts', and the
// isoobs daemon chart's).
const (
	LabelCiliumAgent    = "k8s-app=cilium"
	LabelCiliumEnvoy    = "k8s-app=cilium-envoy"
	LabelCiliumOperator = "io.cilium/app=operator" // Prometheus sees it as __meta_kubernetes_pod_label_io_cilium_app (seed 000)
	LabelHubbleRelay    = "k8s-app=hubble-relay"
	LabelHubbleUI       = "k8s-app=hubble-ui"
	LabelTetragon       = "app.kubernetes.io/name=tetragon"
	LabelTetragonOp     = "app.kubernetes.io/name=tetragon-operator"
	LabelDNSProxy       = "k8s-app=cilium-dnsproxy"
	LabelIsoobsDaemon   = "app.kubernetes.io/name=isoobs,app.kubernetes.io/component=daemon"
)

// Metrics ports (seed 000's receiver table) and the daemon's.
const (
	PortCiliumAgent    = 9962
	PortCiliumOperator = 9963
	PortEnvoy          = 9964
	PortHubbleMetrics  = 9965
	PortTetragon       = 2112
	PortIsoobs         = 9966
	PortRelay          = 4245
)

// env is what checks share during one run: the clients and memoized reads,
// so ten checks that need the cilium pods list them once.
type env struct {
	Options
	mu    sync.Mutex
	memos map[string]*memo
}

type memo struct {
	once sync.Once
	val  any
	err  error
}

func newEnv(opts Options) *env { return &env{Options: opts, memos: map[string]*memo{}} }

// remember computes f once per key for the whole run.
func remember[T any](e *env, key string, f func() (T, error)) (T, error) {
	e.mu.Lock()
	m, ok := e.memos[key]
	if !ok {
		m = &memo{}
		e.memos[key] = m
	}
	e.mu.Unlock()
	m.once.Do(func() { m.val, m.err = f() })
	v, _ := m.val.(T)
	return v, m.err
}

// The memoized reads use the first caller's context; later callers share
// its result (or its timeout).

func (e *env) pods(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	return remember(e, "pods/"+ns+"/"+selector, func() ([]corev1.Pod, error) {
		l, err := e.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, err
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
		return l.Items, nil
	})
}

func (e *env) nodes(ctx context.Context) ([]corev1.Node, error) {
	return remember(e, "nodes", func() ([]corev1.Node, error) {
		l, err := e.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
		return l.Items, nil
	})
}

func (e *env) daemonSets(ctx context.Context, ns, selector string) ([]appsv1.DaemonSet, error) {
	return remember(e, "ds/"+ns+"/"+selector, func() ([]appsv1.DaemonSet, error) {
		l, err := e.Client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	})
}

func (e *env) deployments(ctx context.Context, ns, selector string) ([]appsv1.Deployment, error) {
	return remember(e, "deploy/"+ns+"/"+selector, func() ([]appsv1.Deployment, error) {
		l, err := e.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, err
		}
		return l.Items, nil
	})
}

// ciliumConfig returns the cilium-config ConfigMap's data (nil if absent).
func (e *env) ciliumConfig(ctx context.Context) (map[string]string, error) {
	return remember(e, "cilium-config", func() (map[string]string, error) {
		cm, err := e.Client.CoreV1().ConfigMaps(e.Namespaces.Cilium).Get(ctx, "cilium-config", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return cm.Data, nil
	})
}

// edition is "enterprise" when asked, or when the cilium agent runs an
// Isovalent image; else "oss".
func (e *env) edition(ctx context.Context) string {
	if e.Edition != "" {
		return e.Edition
	}
	dss, _ := e.daemonSets(ctx, e.Namespaces.Cilium, LabelCiliumAgent)
	for _, ds := range dss {
		for _, c := range ds.Spec.Template.Spec.Containers {
			if strings.Contains(c.Image, "isovalent") {
				return "enterprise"
			}
		}
	}
	return "oss"
}

// podState is a short "Running/NotReady"-style description for details.
func podState(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
	}
	if p.Status.Phase == corev1.PodRunning && !k8s.PodReady(p) {
		return "Running, not Ready"
	}
	return string(p.Status.Phase)
}

func apiErr(what string, err error) Result {
	next := "kubectl auth can-i --list  # does your account have read access?"
	if apierrors.IsForbidden(err) {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s: forbidden: %v", what, err), Next: next}
	}
	return Result{Status: StatusFail, Detail: fmt.Sprintf("%s: %v", what, err), Next: "kubectl cluster-info"}
}
