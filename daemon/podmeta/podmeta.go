// Package podmeta knows the pods of one node from the Kubernetes API: name, namespace, labels and
// the workload that owns each pod, looked up by pod UID.
package podmeta

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Pod is what the daemon shows about a pod.
type Pod struct {
	UID          string
	Name         string
	Namespace    string
	Node         string
	Labels       map[string]string
	Workload     string
	WorkloadKind string
	// Containers maps container IDs (without the runtime's "containerd://" prefix) to container
	// names, from the pod's status: a trace names the container whose cgroup sent a query.
	Containers map[string]string
	// IPs are the pod's addresses (status.podIPs): a DNS server pod's rows are found by the
	// address its clients sent their queries to.
	IPs []string
	// HostNetwork is spec.hostNetwork: the pod runs in the node's network namespace and its IPs
	// are the node's, not its own (packets to them are not the pod's).
	HostNetwork bool
}

// cronJobJobName is how the CronJob controller names its Jobs: <cronjob>-<scheduled unix minutes>.
var cronJobJobName = regexp.MustCompile(`^(.+)-[0-9]{8,}$`)

// Owner names the workload a pod belongs to without extra API calls: a ReplicaSet that carries
// the pod's pod-template-hash belongs to the Deployment named by the rest of its name; a Job
// named like the CronJob controller names them belongs to that CronJob. Pods without a
// controller are their own workload (kind "Pod"); static pods (owned by their Node) likewise.
func Owner(pod *corev1.Pod) (name, kind string) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return pod.Name, "Pod"
	}
	switch ref.Kind {
	case "ReplicaSet":
		if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
			return strings.TrimSuffix(ref.Name, "-"+hash), "Deployment"
		}
		return ref.Name, "ReplicaSet"
	case "Job":
		if m := cronJobJobName.FindStringSubmatch(ref.Name); m != nil {
			return m[1], "CronJob"
		}
		return ref.Name, "Job"
	case "Node":
		return pod.Name, "Pod"
	default:
		// DaemonSet, StatefulSet, ReplicationController and custom controllers name themselves.
		return ref.Name, ref.Kind
	}
}

// FromPod converts an API pod.
func FromPod(p *corev1.Pod) Pod {
	w, k := Owner(p)
	pod := Pod{UID: string(p.UID), Name: p.Name, Namespace: p.Namespace, Node: p.Spec.NodeName, Labels: p.Labels, Workload: w, WorkloadKind: k,
		HostNetwork: p.Spec.HostNetwork}
	for _, ip := range p.Status.PodIPs {
		pod.IPs = append(pod.IPs, ip.IP)
	}
	if len(pod.IPs) == 0 && p.Status.PodIP != "" {
		pod.IPs = []string{p.Status.PodIP}
	}
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, c := range list {
			if _, id, ok := strings.Cut(c.ContainerID, "://"); ok && id != "" {
				if pod.Containers == nil {
					pod.Containers = map[string]string{}
				}
				pod.Containers[id] = c.Name
			}
		}
	}
	return pod
}

// Watcher keeps the pods of one node from an informer limited to spec.nodeName=<node>.
type Watcher struct {
	node    string
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	inf     cache.SharedIndexInformer

	// host is the API server the daemon talks to, named in errors (in a pod: the kubernetes
	// Service IP, which only works where kube-proxy or an equivalent routes it).
	host   string
	logger *slog.Logger
	// reach checks that the API server answers (nil: not checked); reachTimeout bounds each
	// check while the pod list has not synced.
	reach        func(context.Context) error
	reachTimeout time.Duration

	mu      sync.RWMutex
	byUID   map[string]Pod
	lastErr string
	errAt   time.Time
	logged  string // the last error logged, so a repeating failure is logged once
}

// NewWatcher builds the watcher; Start runs it. Failures to reach or list are logged to logger
// (once per distinct error) and reported by Connected.
func NewWatcher(cfg *rest.Config, node string, logger *slog.Logger) (*Watcher, error) {
	if node == "" {
		return nil, fmt.Errorf("node name is empty: pass --node-name (in a DaemonSet, set it from spec.nodeName via the downward API)")
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "isoobs-daemon"
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	w := newWatcher(cs, node)
	w.host = cfg.Host
	w.reach = func(ctx context.Context) error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(ctx)
		return err
	}
	if logger != nil {
		w.logger = logger
	}
	return w, nil
}

func newWatcher(cs kubernetes.Interface, node string) *Watcher {
	w := &Watcher{node: node, client: cs, byUID: map[string]Pod{}, logger: slog.New(slog.DiscardHandler), reachTimeout: 5 * time.Second}
	w.factory = informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	w.inf = w.factory.Core().V1().Pods().Informer()
	// Keep only what we show; managed fields and specs of a busy node are most of the memory.
	_ = w.inf.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			p.ManagedFields = nil
			p.Annotations = nil
			// hostNetwork stays: such a pod's IPs are the node's.
			p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
			// Container names and IDs stay: a trace names the container of each query. The IPs
			// stay: a client's DNS server address names the server pod.
			p.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs,
				InitContainerStatuses:      namesAndIDs(p.Status.InitContainerStatuses),
				ContainerStatuses:          namesAndIDs(p.Status.ContainerStatuses),
				EphemeralContainerStatuses: namesAndIDs(p.Status.EphemeralContainerStatuses)}
		}
		return obj, nil
	})
	_ = w.inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		w.setErr("listing this node's pods: " + err.Error())
	})
	_, _ = w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.upsert,
		UpdateFunc: func(_, n any) { w.upsert(n) },
		DeleteFunc: w.remove,
	})
	return w
}

// Start runs the informer until ctx ends, and checks that the API server answers until the first
// list arrives: a list to an unroutable address hangs for a TCP or TLS timeout and then retries
// with backoff, which alone would leave /readyz saying "not synced yet" for minutes.
func (w *Watcher) Start(ctx context.Context) {
	w.factory.Start(ctx.Done())
	if w.reach != nil {
		go w.checkReachable(ctx)
	}
}

func (w *Watcher) checkReachable(ctx context.Context) {
	tick := time.NewTicker(w.reachTimeout)
	defer tick.Stop()
	for !w.inf.HasSynced() {
		rctx, cancel := context.WithTimeout(ctx, w.reachTimeout)
		err := w.reach(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !w.inf.HasSynced() {
			w.setErr(fmt.Sprintf("cannot reach the Kubernetes API server %s: %v (pods are counted by cgroup but not named; check the node's route to the kubernetes Service)", w.host, err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *Watcher) setErr(msg string) {
	w.mu.Lock()
	w.lastErr, w.errAt = msg, time.Now()
	first := msg != w.logged
	w.logged = msg
	w.mu.Unlock()
	if first {
		w.logger.Warn("kubernetes API", "node", w.node, "err", msg)
	}
}

// WaitSynced waits for the first list, up to ctx.
func (w *Watcher) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), w.inf.HasSynced)
}

func namesAndIDs(list []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(list) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(list))
	for i, c := range list {
		out[i] = corev1.ContainerStatus{Name: c.Name, ContainerID: c.ContainerID}
	}
	return out
}

// Find returns the pod namespace/name on this node.
func (w *Watcher) Find(namespace, name string) (Pod, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, p := range w.byUID {
		if p.Namespace == namespace && p.Name == name {
			return p, true
		}
	}
	return Pod{}, false
}

// Lookup finds a pod by UID.
func (w *Watcher) Lookup(uid string) (Pod, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	p, ok := w.byUID[uid]
	return p, ok
}

// Len is the number of pods known on this node.
func (w *Watcher) Len() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.byUID)
}

// Connected reports whether the informer has synced and its last watch did not fail; err says
// what failed otherwise.
func (w *Watcher) Connected() (bool, string) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.inf.HasSynced() {
		if w.lastErr != "" {
			return false, w.lastErr
		}
		return false, "pod list not synced yet"
	}
	// A watch error older than a resync is history: the reflector has re-listed since.
	if w.lastErr != "" && time.Since(w.errAt) < 30*time.Second && w.inf.LastSyncResourceVersion() == "" {
		return false, w.lastErr
	}
	return true, ""
}

func (w *Watcher) upsert(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.mu.Lock()
	w.byUID[string(p.UID)] = FromPod(p)
	w.lastErr, w.logged = "", ""
	w.mu.Unlock()
}

func (w *Watcher) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.mu.Lock()
	delete(w.byUID, string(p.UID))
	w.mu.Unlock()
}
