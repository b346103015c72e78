// Package testlab composes the local incident lab: a real control plane (package controlplane),
// kwok nodes whose pods get a real node side on this host (package podnet: netns, veth, cgroup),
// and the adopter that ties the two together.
//
// The adopter watches pods bound to lab nodes, allocates their IPs from the node's CIDRs, builds
// their netns/veth/cgroup, and only then writes status.podIP(s); kwok's pod-ready stage waits for
// that field before marking the pod Running. So a Running lab pod always has a network namespace
// that really holds the addresses the API shows.
package testlab

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/isoobs/isoobs/k8s"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/coredns"
	"github.com/isoobs/isoobs/testlab/podnet"
	"github.com/isoobs/isoobs/testlab/realnode"
)

// DefaultNodes are the lab nodes when Options.Nodes is empty.
var DefaultNodes = []string{"lab-node-a", "lab-node-b", "lab-node-c"}

// Options configure Start.
type Options struct {
	// ID is 1-5 characters of [a-z0-9]. It prefixes every host object (veths, cgroup dirs) and
	// picks the lab's address ranges, so two labs with different IDs can run at once.
	// Empty: a random id.
	ID string
	// Nodes are the kwok node names (default DefaultNodes).
	Nodes []string
	// Driver is the cgroup naming of the emulated kubelet: "systemd" (default) or "cgroupfs".
	Driver string
	// NetIndex (1-254) picks the address ranges: pods 10.<n>.<node+1>.0/24 and
	// fd77:<n>:0:<node+1>::/64, services 10.<n>.0.0/24. 0: derived from ID, skipping ranges the
	// host already routes.
	NetIndex int
	// Dir keeps the control plane's files (kubeconfigs, logs). Empty: a temp dir removed by Close.
	Dir string
	// NoCoreDNS skips the kube-system/coredns Deployment and kube-dns Service.
	NoCoreDNS bool
	// Logf receives adopter problems (default: discarded; StartForTest routes them to t.Logf).
	Logf func(format string, args ...any)
	// RealNode adds RealNodeName: a real kubelet + containerd node (package realnode) with the
	// pod subnet RealNodeSubnet, tainted so only pods tolerating realnode.TaintKey (and
	// DaemonSets tolerating everything) run there. The adopter leaves its pods to its kubelet.
	RealNode bool
}

// RealNodeName is the real node's name (Options.RealNode).
const RealNodeName = "lab-real-node"

// RealNodeSubnet is the real node's pod subnet for net index n: inside the lab's 10.<n>.0.0/16,
// above every kwok node's 10.<n>.<i+1>.0/24.
func RealNodeSubnet(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), 254, 0}), 24)
}

// Lab is a running lab. Close it.
type Lab struct {
	ID       string
	NetIndex int
	CP       *controlplane.ControlPlane
	Nodes    []*podnet.Node
	// CgroupRoot is the lab's cgroup v2 dir; node i's root is CgroupRoot/<node name>.
	CgroupRoot  string
	ServiceCIDR netip.Prefix
	// DNSServiceIP is the kube-dns ClusterIP (10.<n>.0.10). Lab pods have no resolv.conf of their
	// own; DNS clients take this address explicitly (dnsgen --server).
	DNSServiceIP netip.Addr
	// DNS is the CoreDNS serving kube-dns (nil with NoCoreDNS).
	DNS *coredns.Server
	// Real is the real node (nil unless Options.RealNode).
	Real *realnode.Node

	opts     Options
	adopter  *adopter
	extras   []func() // closers of add-ons (CoreDNS), run first on Close
	closeErr error
	once     sync.Once
}

var labIDRe = regexp.MustCompile(`^[a-z0-9]{1,5}$`)

func randomID() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := []byte{'l', 0, 0, 0, 0}
	for i := range b {
		id[i+1] = chars[int(b[i])%len(chars)]
	}
	return string(id)
}

// NetClaimDir holds one file per address-range index in use by a running lab (its owner's
// PID), so labs started at the same moment, before either has routes, never pick the same one.
const NetClaimDir = "/run/isoobs-lab-nets"

// claimNetIndex records this process as the user of index n unless a live process holds it.
func claimNetIndex(n int) bool {
	if err := os.MkdirAll(NetClaimDir, 0o755); err != nil {
		return false
	}
	path := filepath.Join(NetClaimDir, strconv.Itoa(n))
	for range 2 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%d\n", os.Getpid())
			f.Close()
			return true
		}
		data, rerr := os.ReadFile(path)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
		if rerr == nil && perr == nil && processLive(pid) {
			return false
		}
		os.Remove(path) // stale claim of a dead lab
	}
	return false
}

func releaseNetIndex(n int) {
	path := filepath.Join(NetClaimDir, strconv.Itoa(n))
	if data, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
		os.Remove(NetClaimDir) // only when empty
	}
}

// SweepStaleNetClaims removes address-range claims of dead labs (isoobs-lab down calls it).
func SweepStaleNetClaims() {
	ents, _ := os.ReadDir(NetClaimDir)
	for _, e := range ents {
		path := filepath.Join(NetClaimDir, e.Name())
		data, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && (perr != nil || !processLive(pid)) {
			os.Remove(path)
		}
	}
	os.Remove(NetClaimDir) // only when empty
}

// processLive: the process exists and is not a zombie.
func processLive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && !strings.HasPrefix(string(data[i+1:]), " Z")
}

// netIndexFor derives the address-range index from the lab id, skipping ranges another lab has
// claimed or the host already routes, and claims it.
func netIndexFor(id string) (int, error) {
	h := fnv.New32a()
	h.Write([]byte(id))
	start := int(h.Sum32()%200) + 20
	for i := range 254 {
		n := (start-1+i)%254 + 1
		if inUse, _ := netRangeRouted(n); !inUse && claimNetIndex(n) {
			return n, nil
		}
	}
	return 0, errors.New("every 10.<n>.0.0/16 range is routed or claimed on this host; set Options.NetIndex")
}

// netRangeRouted reports whether any host route falls in 10.<n>.0.0/16 or fd77:<n>::/32.
func netRangeRouted(n int) (bool, string) {
	v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), 0, 0}), 16)
	v6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x77, byte(n >> 8), byte(n)}), 32)
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, ""
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		ones, _ := r.Dst.Mask.Size()
		p := netip.PrefixFrom(a, ones)
		if ones == 0 { // default route
			continue
		}
		if p.Overlaps(v4) || p.Overlaps(v6) {
			return true, p.String()
		}
	}
	return false, ""
}

// NodeCIDRs returns node i's pod CIDRs for net index n.
func NodeCIDRs(n, i int) (v4, v6 netip.Prefix) {
	v4 = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), byte(i + 1), 0}), 24)
	v6 = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x77, byte(n >> 8), byte(n), 0, 0, byte((i + 1) >> 8), byte(i + 1)}), 64)
	return v4, v6
}

// Start brings up a lab: control plane, one kwok node + podnet node per name, the adopter, and
// (unless NoCoreDNS) CoreDNS behind the kube-dns Service. Needs root.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, veths, cgroups); run as root, e.g. sudo -E go test ./testlab/...")
	}
	if opts.ID == "" {
		opts.ID = randomID()
	}
	if !labIDRe.MatchString(opts.ID) {
		return nil, fmt.Errorf("lab id %q must be 1-5 characters of [a-z0-9] (it prefixes veth names, limited to 15 bytes)", opts.ID)
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = DefaultNodes
	}
	if len(opts.Nodes) > 250 {
		return nil, fmt.Errorf("%d nodes: the lab supports at most 250", len(opts.Nodes))
	}
	seen := map[string]bool{}
	for _, n := range opts.Nodes {
		if seen[n] {
			return nil, fmt.Errorf("node name %q is listed twice in Options.Nodes", n)
		}
		seen[n] = true
	}
	if opts.Driver == "" {
		opts.Driver = podnet.DriverSystemd
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	// A killed earlier lab may have left netns/veths/cgroups; they also block its ranges.
	if err := podnet.SweepStale(); err != nil {
		opts.Logf("sweeping leftovers of dead labs: %v", err)
	}
	if err := realnode.SweepStale(opts.Logf); err != nil {
		if opts.RealNode {
			return nil, err
		}
		opts.Logf("%v", err)
	}
	if opts.NetIndex == 0 {
		if opts.NetIndex, err = netIndexFor(opts.ID); err != nil {
			return nil, err
		}
	} else if opts.NetIndex < 1 || opts.NetIndex > 254 {
		return nil, fmt.Errorf("Options.NetIndex %d is outside 1-254", opts.NetIndex)
	} else if used, route := netRangeRouted(opts.NetIndex); used {
		return nil, fmt.Errorf("Options.NetIndex %d: the host already routes %s inside 10.%d.0.0/16 or fd77:%x::/32; pick another NetIndex or stop the lab using it (isoobs-lab down)", opts.NetIndex, route, opts.NetIndex, opts.NetIndex)
	} else if !claimNetIndex(opts.NetIndex) {
		return nil, fmt.Errorf("Options.NetIndex %d is used by another running lab (see %s); pick another", opts.NetIndex, NetClaimDir)
	}

	cg2, err := podnet.CgroupV2Mount()
	if err != nil {
		releaseNetIndex(opts.NetIndex)
		return nil, err
	}
	l := &Lab{
		ID:          opts.ID,
		NetIndex:    opts.NetIndex,
		CgroupRoot:  filepath.Join(cg2, "isoobs-"+opts.ID),
		ServiceCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(opts.NetIndex), 0, 0}), 24),
		opts:        opts,
	}
	l.DNSServiceIP = netip.AddrFrom4([4]byte{10, byte(opts.NetIndex), 0, 10})
	// Registered from the start so a signal during Start still tears down what exists.
	registerForSignals(l)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()

	l.CP, err = controlplane.Start(ctx, controlplane.Options{Dir: opts.Dir, KeepDir: opts.Dir != "", ServiceCIDR: l.ServiceCIDR.String()})
	if err != nil {
		return nil, err
	}
	for i, name := range opts.Nodes {
		v4, v6 := NodeCIDRs(opts.NetIndex, i)
		n, err := podnet.NewNode(podnet.NodeConfig{
			Name: name, LabID: opts.ID, CgroupParent: filepath.Join(l.CgroupRoot, name),
			Driver: opts.Driver, PodCIDRv4: v4, PodCIDRv6: v6,
		})
		if err != nil {
			return nil, err
		}
		l.Nodes = append(l.Nodes, n)
	}
	// Adopter before nodes exist in the API: nothing can be scheduled yet, so no pod is missed.
	if l.adopter, err = startAdopter(ctx, l.CP.Client(), l.Nodes, l.DNSServiceIP, opts.Logf); err != nil {
		return nil, err
	}
	// kwok nodes in parallel: each waits ~1 s for kwok's node-initialize stage.
	errs := make([]error, len(opts.Nodes))
	var wg sync.WaitGroup
	for i, name := range opts.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v4, v6 := NodeCIDRs(opts.NetIndex, i)
			_, errs[i] = l.CP.AddNode(ctx, name, v4, v6)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !opts.NoCoreDNS {
		if err := l.startCoreDNS(ctx); err != nil {
			return nil, err
		}
	}
	// Last, so CoreDNS (an emulated pod) is already on a kwok node.
	if opts.RealNode {
		if l.Real, err = realnode.Start(ctx, realnode.Config{
			Name: RealNodeName, LabID: l.ID, Dir: filepath.Join(l.CP.Dir, "realnode"), CP: l.CP,
			Subnet: RealNodeSubnet(l.NetIndex), DNSServiceIP: l.DNSServiceIP, Logf: opts.Logf,
		}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Client is an admin clientset.
func (l *Lab) Client() kubernetes.Interface { return l.CP.Client() }

// RESTConfig is an admin client config.
func (l *Lab) RESTConfig() *rest.Config { return l.CP.RESTConfig() }

// Kubeconfig is the admin kubeconfig path.
func (l *Lab) Kubeconfig() string { return l.CP.Kubeconfig }

// Node returns the podnet node with this name, or nil.
func (l *Lab) Node(name string) *podnet.Node {
	for _, n := range l.Nodes {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// IsRealNode reports whether name is the lab's real node.
func (l *Lab) IsRealNode(name string) bool { return l.Real != nil && name == l.Real.Name }

// NodeNames lists the lab's kwok node names in creation order (not the real node).
func (l *Lab) NodeNames() []string {
	out := make([]string, len(l.Nodes))
	for i, n := range l.Nodes {
		out[i] = n.Name()
	}
	return out
}

// Pod returns the node side of an adopted pod, or nil if the pod is not (yet) adopted.
func (l *Lab) Pod(namespace, name string) *podnet.Pod {
	return l.adopter.get(namespace + "/" + name)
}

// Pods returns every adopted pod, sorted by namespace/name.
func (l *Lab) Pods() []*podnet.Pod {
	return l.adopter.all()
}

// EnsureNamespace creates the namespace if it does not exist.
func (l *Lab) EnsureNamespace(ctx context.Context, name string) error {
	_, err := l.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// PauseImage is the image lab pods name; kwok never pulls it.
const PauseImage = "registry.k8s.io/pause:3.10"

// NewPod returns a minimal pod: one container with PauseImage. Set Spec.NodeName to pin it.
func NewPod(namespace, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{{Name: "main", Image: PauseImage}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// CreatePod creates the pod (and its namespace if missing).
func (l *Lab) CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	if err := l.EnsureNamespace(ctx, pod.Namespace); err != nil {
		return nil, err
	}
	created, err := l.Client().CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return created, nil
}

// WaitPodReady waits until the pod is Running and Ready and (unless hostNetwork or on the real
// node) adopted, and returns its API object and node side (nil for hostNetwork and real-node pods).
func (l *Lab) WaitPodReady(ctx context.Context, namespace, name string) (*corev1.Pod, *podnet.Pod, error) {
	var pod *corev1.Pod
	var np *podnet.Pod
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := l.Client().CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, nil
		}
		pod = p
		if !k8s.PodReady(p) {
			return false, nil
		}
		if p.Spec.HostNetwork || l.IsRealNode(p.Spec.NodeName) {
			return true, nil
		}
		np = l.Pod(namespace, name)
		return np != nil && np.UID == p.UID, nil
	})
	if err != nil {
		return nil, nil, l.explainNotReady(namespace+"/"+name, pod, err)
	}
	return pod, np, nil
}

// WaitPodsReady waits until count pods matching selector in namespace are ready and adopted.
func (l *Lab) WaitPodsReady(ctx context.Context, namespace, selector string, count int) ([]corev1.Pod, error) {
	var ready []corev1.Pod
	var last *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := l.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		ready = ready[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil {
				continue
			}
			np := l.Pod(p.Namespace, p.Name)
			if k8s.PodReady(p) && (p.Spec.HostNetwork || l.IsRealNode(p.Spec.NodeName) || (np != nil && np.UID == p.UID)) {
				ready = append(ready, *p)
			} else {
				last = p
			}
		}
		return len(ready) == count, nil
	})
	if err != nil {
		what := fmt.Sprintf("%d pods %q in %s (have %d ready)", count, selector, namespace, len(ready))
		return nil, l.explainNotReady(what, last, err)
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
	return ready, nil
}

func (l *Lab) explainNotReady(what string, pod *corev1.Pod, err error) error {
	msg := fmt.Sprintf("%s not ready: %v", what, err)
	if pod != nil {
		msg += fmt.Sprintf("; pod %s/%s phase=%s node=%q podIPs=%v", pod.Namespace, pod.Name, pod.Status.Phase, pod.Spec.NodeName, pod.Status.PodIPs)
		if pod.Spec.NodeName == "" {
			msg += " (not scheduled: see kube-scheduler.log in " + l.CP.Dir + ")"
		}
	}
	if e := l.adopter.lastError(); e != "" {
		msg += "; last adopter error: " + e
	}
	return errors.New(msg)
}

// Close tears everything down: add-ons, adopter, pods (netns, veths, cgroups), the control
// plane. Safe to call more than once; returns the first call's error.
func (l *Lab) Close() error {
	l.once.Do(func() {
		unregisterForSignals(l)
		var errs []error
		if l.Real != nil { // first: its pods use CoreDNS and the API server
			if err := l.Real.Close(); err != nil {
				errs = append(errs, fmt.Errorf("real node: %w", err))
			}
		}
		for i := len(l.extras) - 1; i >= 0; i-- {
			l.extras[i]()
		}
		if l.adopter != nil {
			l.adopter.stop()
		}
		for _, n := range l.Nodes {
			if err := n.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node %s: %w", n.Name(), err))
			}
		}
		// Nodes remove their own dirs; the shared parent only goes once all are gone.
		if l.CgroupRoot != "" {
			// RemoveCgroupTree waits for processes still being reaped (EBUSY).
			if err := podnet.RemoveCgroupTree(l.CgroupRoot); err != nil {
				errs = append(errs, fmt.Errorf("removing lab cgroup %s: %w", l.CgroupRoot, err))
			}
		}
		if l.CP != nil {
			l.CP.Stop()
		}
		if l.NetIndex != 0 {
			releaseNetIndex(l.NetIndex)
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// ---- adopter ----

type adopted struct {
	uid  types.UID
	node *podnet.Node
	pod  *podnet.Pod // nil for hostNetwork pods
}

// adopter gives pods bound to lab nodes their node side and status.podIPs. One queue keyed by
// namespace/name, so events of one pod are handled in order and never concurrently.
type adopter struct {
	client  kubernetes.Interface
	nodes   map[string]*podnet.Node
	logf    func(string, ...any)
	dnsIP   netip.Addr // kube-dns ClusterIP every pod's resolv.conf names
	queue   workqueue.TypedRateLimitingInterface[string]
	indexer cache.Indexer
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	pods    map[string]adopted
	lastErr string
}

const adopterWorkers = 4

func startAdopter(ctx context.Context, client kubernetes.Interface, nodes []*podnet.Node, dnsIP netip.Addr, logf func(string, ...any)) (*adopter, error) {
	a := &adopter{
		client: client,
		dnsIP:  dnsIP,
		nodes:  map[string]*podnet.Node{},
		logf:   logf,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](
			20*time.Millisecond, 2*time.Second)),
		pods: map[string]adopted{},
	}
	for _, n := range nodes {
		a.nodes[n.Name()] = n
	}
	// Lives until stop, not until the start ctx ends.
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName!=" }))
	inf := factory.Core().V1().Pods().Informer()
	a.indexer = inf.GetIndexer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		cancel()
		return nil, err
	}
	factory.Start(runCtx.Done())
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		cancel()
		factory.Shutdown()
		return nil, errors.New("adopter: pod informer did not sync with the apiserver in 30s")
	}
	for range adopterWorkers {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for a.processNext(runCtx) {
			}
		}()
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-runCtx.Done()
		a.queue.ShutDown()
		factory.Shutdown()
	}()
	return a, nil
}

func (a *adopter) stop() {
	a.cancel()
	a.wg.Wait()
}

func (a *adopter) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		a.mu.Lock()
		a.lastErr = fmt.Sprintf("%s: %v", key, err)
		a.mu.Unlock()
		a.logf("adopter: %s: %v (retrying)", key, err)
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

func (a *adopter) release(key string) error {
	a.mu.Lock()
	old, ok := a.pods[key]
	delete(a.pods, key)
	a.mu.Unlock()
	if !ok || old.pod == nil {
		return nil
	}
	return old.node.DetachPod(old.uid)
}

func (a *adopter) sync(ctx context.Context, key string) error {
	obj, exists, err := a.indexer.GetByKey(key)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old, had := a.pods[key]
	a.mu.Unlock()
	if !exists {
		return a.release(key)
	}
	pod := obj.(*corev1.Pod)
	if had && old.uid != pod.UID { // deleted and recreated under the same name
		if err := a.release(key); err != nil {
			return err
		}
		had = false
	}
	node := a.nodes[pod.Spec.NodeName]
	if node == nil {
		return nil // not a lab node (or not bound yet)
	}
	// Like the kubelet: a terminating or finished pod loses its sandbox.
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return a.release(key)
	}
	if had {
		return nil
	}
	if pod.Spec.HostNetwork {
		if pod.Status.PodIP == "" {
			if err := a.patchPodIPs(ctx, pod, []string{controlplane.NodeIP}); err != nil {
				return err
			}
		}
		a.mu.Lock()
		a.pods[key] = adopted{uid: pod.UID, node: node}
		a.mu.Unlock()
		return nil
	}

	pod = pod.DeepCopy()
	allocated := false
	if len(pod.Status.PodIPs) == 0 && pod.Status.PodIP == "" {
		v4, v6, err := node.AllocateIPs()
		if err != nil {
			return err
		}
		allocated = true
		pod.Status.PodIPs = nil
		for _, ip := range []netip.Addr{v4, v6} {
			if ip.IsValid() {
				pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
			}
		}
		pod.Status.PodIP = pod.Status.PodIPs[0].IP
	}
	np, err := node.AttachPod(pod)
	if err != nil {
		return fmt.Errorf("attach to node %s: %w", node.Name(), err)
	}
	// Like the kubelet for a ClusterFirst pod: its resolver is the cluster DNS.
	if err := np.SetResolvConf(podnet.KubeResolvConf(pod.Namespace, "cluster.local", a.dnsIP)); err != nil {
		_ = node.DetachPod(pod.UID)
		return fmt.Errorf("resolv.conf of %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if allocated {
		ips := make([]string, len(pod.Status.PodIPs))
		for i, ip := range pod.Status.PodIPs {
			ips[i] = ip.IP
		}
		if err := a.patchPodIPs(ctx, pod, ips); err != nil {
			_ = node.DetachPod(pod.UID)
			if apierrors.IsNotFound(err) {
				return nil // deleted meanwhile
			}
			return err
		}
	}
	a.mu.Lock()
	a.pods[key] = adopted{uid: pod.UID, node: node, pod: np}
	a.mu.Unlock()
	return nil
}

// patchPodIPs writes status.podIP/podIPs; the UID precondition keeps it off a recreated pod.
func (a *adopter) patchPodIPs(ctx context.Context, pod *corev1.Pod, ips []string) error {
	podIPs := make([]map[string]string, len(ips))
	for i, ip := range ips {
		podIPs[i] = map[string]string{"ip": ip}
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   map[string]any{"podIP": ips[0], "podIPs": podIPs},
	})
	_, err := a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch status.podIPs: %w", err)
	}
	return nil
}

func (a *adopter) get(key string) *podnet.Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[key].pod
}

func (a *adopter) all() []*podnet.Pod {
	a.mu.Lock()
	out := make([]*podnet.Pod, 0, len(a.pods))
	for _, p := range a.pods {
		if p.pod != nil {
			out = append(out, p.pod)
		}
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func (a *adopter) lastError() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// ---- signal-safe teardown ----

var liveLabs = struct {
	sync.Mutex
	m map[*Lab]bool
}{m: map[*Lab]bool{}}

func registerForSignals(l *Lab) {
	liveLabs.Lock()
	liveLabs.m[l] = true
	liveLabs.Unlock()
}

func unregisterForSignals(l *Lab) {
	liveLabs.Lock()
	delete(liveLabs.m, l)
	liveLabs.Unlock()
}

// CloseAll closes every lab of this process that is still open (for signal handlers).
func CloseAll() {
	liveLabs.Lock()
	labs := make([]*Lab, 0, len(liveLabs.m))
	for l := range liveLabs.m {
		labs = append(labs, l)
	}
	liveLabs.Unlock()
	var wg sync.WaitGroup
	for _, l := range labs {
		wg.Add(1)
		go func() { defer wg.Done(); l.Close() }()
	}
	wg.Wait()
	controlplane.StopAll() // control planes still starting (not yet in a Lab) or used directly
}
