// Package controlplane runs a real, local Kubernetes control plane for the isoobs lab: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the kubelet of fake
// nodes), all on free 127.0.0.1 ports so several can run side by side.
//
// Pod IPs are owned by the lab (see package testlab), not kwok: the pod-ready stage only marks a
// pod Running once status.podIP is set, and never writes pod IPs itself.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Names used for the two users the control plane knows.
const (
	AdminUser      = "isoobs-admin"      // in system:masters
	RestrictedUser = "isoobs-restricted" // read-only on pods, nodes, namespaces, services; no portforward/exec/secrets
	// RestrictedClusterRole is the ClusterRole bound to RestrictedUser.
	RestrictedClusterRole = "isoobs-lab:restricted"
	// KwokNodeAnnotation marks nodes kwok manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// NodeIP is the InternalIP kwok gives every lab node (kwok --node-ip).
	NodeIP = "127.0.0.1"
)

// Options configure Start. The zero value is usable.
type Options struct {
	// Dir holds certificates, kubeconfigs, etcd data and component logs. Empty: a new temp dir.
	// Stop removes it unless KeepDir.
	Dir     string
	KeepDir bool
	// ServiceCIDR is the Service ClusterIP range (default 10.96.0.0/24). Labs running at the same
	// time should use different ranges because the lab routes ClusterIPs on the host.
	ServiceCIDR string
	// ReadyTimeout bounds the wait for each component (default 90s).
	ReadyTimeout time.Duration
	// Binaries overrides the programs to run; default: EnsureBinaries().
	Binaries *Binaries
	// PodSecurityDefault is the Pod Security Standard ("baseline", "restricted") the API
	// server's PodSecurity admission enforces in every namespace without its own
	// pod-security.kubernetes.io/enforce label (kube-system exempt), as hardened clusters
	// configure it. Empty: Kubernetes' default, privileged.
	PodSecurityDefault string
}

// podSecurityConfig is an AdmissionConfiguration whose PodSecurity defaults enforce, warn and
// audit level everywhere but kube-system.
func podSecurityConfig(level string) string {
	return `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults:
        enforce: "` + level + `"
        enforce-version: latest
        warn: "` + level + `"
        warn-version: latest
        audit: "` + level + `"
        audit-version: latest
      exemptions:
        namespaces: [kube-system]
`
}

// ControlPlane is a running control plane. Stop it with Stop.
type ControlPlane struct {
	Dir                  string // data dir: logs are <component>.log here
	Kubeconfig           string // admin kubeconfig (system:masters)
	RestrictedKubeconfig string // kubeconfig of RestrictedUser
	APIServerURL         string // https://127.0.0.1:<port>
	APIPort              int
	EtcdURL              string
	ServiceCIDR          netip.Prefix
	CAFile               string

	adminToken, restrictedToken string
	caPEM                       []byte
	keepDir                     bool

	spawner    *spawner
	mu         sync.Mutex
	stopped    bool
	components []*component // in start order
	client     kubernetes.Interface
	stopOnce   sync.Once
}

// live holds every control plane that is starting or running, for StopAll.
var live = struct {
	sync.Mutex
	m map[*ControlPlane]bool
}{m: map[*ControlPlane]bool{}}

// StopAll stops every control plane of this process, also ones still starting (for signal
// handlers: child processes would die anyway, their data dirs would not).
func StopAll() {
	live.Lock()
	cps := make([]*ControlPlane, 0, len(live.m))
	for cp := range live.m {
		cps = append(cps, cp)
	}
	live.Unlock()
	for _, cp := range cps {
		cp.Stop()
	}
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts reserves n distinct free TCP ports on 127.0.0.1. All listeners stay open until every
// port is chosen so one call never returns the same port twice.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start runs every component and returns once the apiserver is ready, the controller-manager has
// created the default ServiceAccount and kwok is running. ctx bounds the start only; the control
// plane lives until Stop.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = "10.96.0.0/24"
	}
	svcCIDR, err := netip.ParsePrefix(opts.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("Options.ServiceCIDR %q is not a CIDR: %v", opts.ServiceCIDR, err)
	}
	var bins Binaries
	if opts.Binaries != nil {
		bins = *opts.Binaries
	} else if bins, err = EnsureBinaries(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "isoobs-cp-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		Dir:             opts.Dir,
		ServiceCIDR:     svcCIDR,
		adminToken:      randomToken(),
		restrictedToken: randomToken(),
		keepDir:         opts.KeepDir,
		spawner:         newSpawner(),
	}
	live.Lock()
	live.m[cp] = true
	live.Unlock()
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	// The first address of the service range is the "kubernetes" Service; clients in pods use it.
	kubernetesSvcIP := svcCIDR.Masked().Addr().Next()
	p, err := generatePKI(cp.Dir, []net.IP{net.IP(kubernetesSvcIP.AsSlice())})
	if err != nil {
		return nil, err
	}
	cp.CAFile, cp.caPEM = p.caCert, p.caPEM

	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]
	cp.EtcdURL = fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	cp.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	cp.APIPort = apiPort
	deadline := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, opts.ReadyTimeout) }

	// etcd
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd, err := cp.start("etcd", bins.Etcd,
		"--name=lab", "--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+cp.EtcdURL, "--advertise-client-urls="+cp.EtcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=lab="+peerURL, "--initial-cluster-state=new",
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return nil, err
	}
	wctx, cancel := deadline()
	err = waitHTTP(wctx, etcd, &http.Client{Timeout: 2 * time.Second}, cp.EtcdURL+"/health", "", `"health":"true"`)
	cancel()
	if err != nil {
		return nil, err
	}

	// kube-apiserver
	tokens := filepath.Join(cp.Dir, "tokens.csv")
	tokenCSV := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s\n",
		cp.adminToken, AdminUser, AdminUser, cp.restrictedToken, RestrictedUser, RestrictedUser)
	if err := os.WriteFile(tokens, []byte(tokenCSV), 0o600); err != nil {
		return nil, err
	}
	apiArgs := []string{}
	if opts.PodSecurityDefault != "" {
		admission := filepath.Join(cp.Dir, "admission.yaml")
		if err := os.WriteFile(admission, []byte(podSecurityConfig(opts.PodSecurityDefault)), 0o600); err != nil {
			return nil, err
		}
		apiArgs = append(apiArgs, "--admission-control-config-file="+admission)
	}
	api, err := cp.start("kube-apiserver", bins.APIServer, append(apiArgs,
		"--etcd-servers="+cp.EtcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir="+filepath.Join(cp.Dir, "apiserver-certs"),
		"--tls-cert-file="+p.servingCert, "--tls-private-key-file="+p.servingKey,
		"--client-ca-file="+p.caCert,
		"--token-auth-file="+tokens,
		// Node: a real kubelet (testlab/realnode) reads only its own pods' secrets and tokens.
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// logs, exec and port-forward to a real kubelet: client cert, verified serving cert, and
		// the node's InternalIP (its Hostname does not resolve). kwok serves the apiserver's cert.
		"--kubelet-client-certificate="+p.kubeletClientCert, "--kubelet-client-key="+p.kubeletClientKey,
		"--kubelet-certificate-authority="+p.caCert,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-cluster-ip-range="+svcCIDR.String(),
		"--service-account-key-file="+p.saPub,
		"--service-account-signing-key-file="+p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1")...)
	if err != nil {
		return nil, err
	}
	wctx, cancel = deadline()
	err = waitHTTP(wctx, api, cp.httpClient(), cp.APIServerURL+"/readyz", cp.adminToken, "ok")
	cancel()
	if err != nil {
		return nil, err
	}
	if err := cp.writeKubeconfigs(); err != nil {
		return nil, err
	}
	if cp.client, err = kubernetes.NewForConfig(cp.RESTConfig()); err != nil {
		return nil, err
	}
	if err := cp.grantRestricted(ctx); err != nil {
		return nil, err
	}

	// kube-controller-manager and kube-scheduler: no serving port (0) so control planes never collide.
	cm, err := cp.start("kube-controller-manager", bins.ControllerManager,
		"--kubeconfig="+cp.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file="+p.saKey,
		"--root-ca-file="+p.caCert,
		"--service-cluster-ip-range="+svcCIDR.String(),
		"--allocate-node-cidrs=false",
		"--controllers=*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--v=1")
	if err != nil {
		return nil, err
	}
	sched, err := cp.start("kube-scheduler", bins.Scheduler,
		"--kubeconfig="+cp.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--v=1")
	if err != nil {
		return nil, err
	}
	kwokConfig, err := writeKwokConfig(cp.Dir, bins.KwokStages)
	if err != nil {
		return nil, err
	}
	if err := cp.installKwokCRDs(ctx); err != nil {
		return nil, err
	}
	kwok, err := cp.start("kwok", bins.Kwok,
		"--kubeconfig="+cp.Kubeconfig,
		"--config="+kwokConfig,
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"=fake",
		// PortForward objects (see ForwardPodPort) route port-forwards to real local addresses.
		"--enable-crds=PortForward",
		"--node-ip="+NodeIP,
		// kwok plays the kubelet's API (logs, exec, port-forward) on the node's daemon port; the
		// apiserver speaks HTTPS to it.
		fmt.Sprintf("--server-address=127.0.0.1:%d", kwokPort),
		"--tls-cert-file="+p.servingCert, "--tls-private-key-file="+p.servingKey,
		fmt.Sprintf("--node-port=%d", kwokPort))
	if err != nil {
		return nil, err
	}

	// The controller-manager is useful once it has created the default ServiceAccount: until then
	// the ServiceAccount admission plugin rejects every pod.
	wctx, cancel = deadline()
	err = wait.PollUntilContextCancel(wctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, c := range []*component{cm, sched, kwok} {
			if !c.running() {
				return false, c.failure("died during start")
			}
		}
		_, err := cp.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	cancel()
	if err != nil {
		if ctx.Err() == nil && wctx.Err() != nil {
			return nil, cm.failure("did not create the default ServiceAccount in " + opts.ReadyTimeout.String())
		}
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) start(name, bin string, args ...string) (*component, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return nil, fmt.Errorf("control plane stopped while starting %s", name)
	}
	c, err := cp.spawner.startComponent(cp.Dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	cp.components = append(cp.components, c)
	return c, nil
}

func (cp *ControlPlane) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// waitHTTP polls url until the body contains want, failing early (with the log tail) if c exits.
func waitHTTP(ctx context.Context, c *component, hc *http.Client, url, token, want string) error {
	var last string
	for {
		if !c.running() {
			return c.failure("exited during start")
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, tail(string(body), 5))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return c.failure(fmt.Sprintf("not ready at %s (last answer: %s)", url, last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RESTConfig returns an admin client config.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            cp.APIServerURL,
		BearerToken:     cp.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.caPEM},
		QPS:             200,
		Burst:           400,
	}
}

// RestrictedRESTConfig returns a client config for RestrictedUser.
func (cp *ControlPlane) RestrictedRESTConfig() *rest.Config {
	c := cp.RESTConfig()
	c.BearerToken = cp.restrictedToken
	return c
}

// Client returns an admin clientset.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

func (cp *ControlPlane) writeKubeconfigs() error {
	write := func(path, user, token string) error {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["isoobs-lab"] = &clientcmdapi.Cluster{Server: cp.APIServerURL, CertificateAuthorityData: cp.caPEM}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
		cfg.Contexts[user+"@isoobs-lab"] = &clientcmdapi.Context{Cluster: "isoobs-lab", AuthInfo: user, Namespace: "default"}
		cfg.CurrentContext = user + "@isoobs-lab"
		return clientcmd.WriteToFile(*cfg, path)
	}
	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	cp.RestrictedKubeconfig = filepath.Join(cp.Dir, "kubeconfig-restricted")
	if err := write(cp.Kubeconfig, AdminUser, cp.adminToken); err != nil {
		return err
	}
	return write(cp.RestrictedKubeconfig, RestrictedUser, cp.restrictedToken)
}

// grantRestricted lets RestrictedUser read pods, nodes, namespaces and services. RBAC treats
// subresources (pods/portforward, pods/exec, pods/log) as separate resources, so they stay denied.
func (cp *ControlPlane) grantRestricted(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: RestrictedClusterRole},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"pods", "nodes", "namespaces", "services"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: RestrictedClusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: RestrictedClusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: RestrictedUser}},
	}
	rbac := cp.client.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", role.Name, err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", binding.Name, err)
	}
	return nil
}

// NodeLabels are set on every node AddNode creates (beyond kubernetes.io/hostname).
var NodeLabels = map[string]string{
	"kubernetes.io/os":   "linux",
	"kubernetes.io/arch": "amd64",
	"type":               "kwok",
}

// AddNode creates a kwok-managed Node with the given pod CIDRs (first one becomes spec.podCIDR)
// and waits until kwok reports it Ready.
func (cp *ControlPlane) AddNode(ctx context.Context, name string, podCIDRs ...netip.Prefix) (*corev1.Node, error) {
	labels := map[string]string{"kubernetes.io/hostname": name}
	for k, v := range NodeLabels {
		labels[k] = v
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      labels,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Status: corev1.NodeStatus{Allocatable: res, Capacity: res},
	}
	for _, c := range podCIDRs {
		node.Spec.PodCIDRs = append(node.Spec.PodCIDRs, c.Masked().String())
	}
	if len(node.Spec.PodCIDRs) > 0 {
		node.Spec.PodCIDR = node.Spec.PodCIDRs[0]
	}
	if _, err := cp.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create node %s: %w", name, err)
	}
	var ready *corev1.Node
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		n, err := cp.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = n
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, cp.componentFailure("kwok", fmt.Sprintf("did not mark node %s Ready", name))
	}
	return ready, nil
}

func (cp *ControlPlane) componentFailure(name, what string) error {
	for _, c := range cp.components {
		if c.name == name {
			return c.failure(what)
		}
	}
	return fmt.Errorf("%s %s", name, what)
}

// Pids returns the process ids of the running components (for RSS measurements and leak checks).
func (cp *ControlPlane) Pids() map[string]int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	out := map[string]int{}
	for _, c := range cp.components {
		if c.cmd.Process != nil && c.running() {
			out[c.name] = c.cmd.Process.Pid
		}
	}
	return out
}

// Stop kills every component (newest first), waits for them and removes Dir unless KeepDir.
// Safe to call more than once.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() {
		cp.mu.Lock()
		cp.stopped = true
		comps := cp.components
		cp.mu.Unlock()
		for i := len(comps) - 1; i >= 0; i-- {
			comps[i].stop(0)
		}
		cp.spawner.close()
		if !cp.keepDir {
			os.RemoveAll(cp.Dir)
		}
		live.Lock()
		delete(live.m, cp)
		live.Unlock()
	})
}
