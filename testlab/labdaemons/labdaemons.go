//go:build linux

// Package labdaemons puts the isoobs daemon on every lab node the way a cluster
// has it: the real chart, installed by the real installer (Helm SDK), makes one
// daemon Pod per node, and each pod's port-forward reaches a real isoobs-daemon
// process observing that node's cgroup root. The plugin then runs in cluster
// mode against the lab kubeconfig, exactly as a user's would.
//
// Test infrastructure only.
package labdaemons

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

// Daemon is one node's real isoobs-daemon process.
type Daemon struct {
	Node        string
	Port        int
	MetricsPort int // /metrics, /readyz on 127.0.0.1; reached at the daemon pod's IP (see Attach)
	Cmd         *exec.Cmd
	exited      chan struct{} // closed when the process has exited (Cmd.Wait returned)
}

// Kill stops the daemon abruptly, like a crashed pod.
func (d *Daemon) Kill() error {
	if err := d.Cmd.Process.Kill(); err != nil {
		return err
	}
	<-d.exited
	return nil
}

func (d *Daemon) stop() {
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
}

// startDaemon runs a daemon for node on a free loopback port and waits until
// it accepts connections. A port found free can be taken by another process
// before the daemon binds it (it then exits: address in use), so that is
// retried on another port.
func startDaemon(lab *testlab.Lab, node, kubeconfig string, opts Options) (*Daemon, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		metrics, err := freePort()
		if err != nil {
			return nil, err
		}
		args := append([]string{"--node-name", node, "--cgroup-root", lab.Node(node).CgroupRoot(),
			"--kubeconfig", kubeconfig, "--grpc-listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metrics), "--log-level", "warn"}, opts.ExtraArgs...)
		cmd := exec.Command(opts.Binary, args...)
		cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start isoobs-daemon for %s: %w", node, err)
		}
		d := &Daemon{Node: node, Port: port, MetricsPort: metrics, Cmd: cmd, exited: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(d.exited) }()
		if lastErr = d.waitListening(30 * time.Second); lastErr == nil {
			return d, nil
		}
		d.stop()
	}
	return nil, fmt.Errorf("isoobs-daemon for %s: %w", node, lastErr)
}

// waitListening waits until the daemon's port accepts connections and the
// daemon is still running a moment later (a connection accepted by another
// process on the port while the daemon fails to bind it shows as its exit).
func (d *Daemon) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := fmt.Sprintf("127.0.0.1:%d", d.Port)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("exited before listening on %s (%v)", addr, d.Cmd.ProcessState)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			select {
			case <-d.exited:
				return fmt.Errorf("exited after %s accepted a connection (%v)", addr, d.Cmd.ProcessState)
			case <-time.After(300 * time.Millisecond):
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Set is the daemons of every lab node.
type Set struct {
	ByNode map[string]*Daemon
	// Kubeconfig is the daemons' credential: a token of the chart's ServiceAccount (TokenRequest),
	// never the lab's admin kubeconfig, so the chart's RBAC is what the daemons run with.
	Kubeconfig string
	// ServiceAccount is that account, "namespace/name".
	ServiceAccount string
	stops          []func()
}

// Options tune Start.
type Options struct {
	// Binary is the isoobs-daemon to run (built from cmd/isoobs-daemon).
	Binary string
	// ExtraArgs are added to every daemon's command line.
	ExtraArgs []string
	// Stderr receives the daemons' logs (default os.Stderr).
	Stderr *os.File
}

// Start runs one daemon per kwok lab node, installs the chart (see installChart) and attaches
// the daemons to their pods (see Attach). Close stops the processes.
func Start(ctx context.Context, lab *testlab.Lab, opts Options) (*Set, error) {
	return start(ctx, lab, opts, true)
}

// Attach is Start for a chart someone else installed (e.g. `kubectl isoobs install`): one
// daemon process per kwok node, attached to that node's daemon pod, so port-forwards to the
// pod reach it (kwok PortForward) and so does the API server's pod proxy to its metrics port
// (a relay in the pod's netns). The real node's daemon pod (Options.RealNode) is a real
// container and is left alone; Attach waits for it to be Ready too.
func Attach(ctx context.Context, lab *testlab.Lab, opts Options) (*Set, error) {
	return start(ctx, lab, opts, false)
}

func start(ctx context.Context, lab *testlab.Lab, opts Options, install bool) (_ *Set, err error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	s := &Set{ByNode: map[string]*Daemon{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if install {
		if err := installChart(ctx, lab); err != nil {
			return nil, err
		}
	}
	// The daemons authenticate as the pods the chart runs do: its ServiceAccount.
	if s.Kubeconfig, s.ServiceAccount, err = serviceAccountKubeconfig(ctx, lab); err != nil {
		return nil, err
	}
	for _, node := range lab.NodeNames() {
		d, err := startDaemon(lab, node, s.Kubeconfig, opts)
		if err != nil {
			return nil, err
		}
		s.ByNode[node] = d
	}
	want := len(s.ByNode)
	if lab.Real != nil {
		want++
	}
	// Bounded: a real node's daemon pod can wait forever (e.g. a hostPath that never appears).
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pods, err := lab.WaitPodsReady(wctx, cluster.DefaultNamespace, cluster.DefaultSelector, want)
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		if lab.IsRealNode(p.Spec.NodeName) {
			continue
		}
		d := s.ByNode[p.Spec.NodeName]
		if d == nil {
			return nil, fmt.Errorf("daemon pod %s is on %q, not a lab node", p.Name, p.Spec.NodeName)
		}
		target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(d.Port))
		if err := lab.ForwardPodPort(ctx, p.Namespace, p.Name, cluster.DefaultPort, target); err != nil {
			return nil, err
		}
		np := lab.Pod(p.Namespace, p.Name)
		if np == nil || !np.IPv4.IsValid() {
			continue
		}
		stop, err := np.ForwardTCP(fmt.Sprintf("%s:%d", np.IPv4, metricsPort(&p)), fmt.Sprintf("127.0.0.1:%d", d.MetricsPort))
		if err != nil {
			return nil, fmt.Errorf("metrics of daemon pod %s: %w", p.Name, err)
		}
		s.stops = append(s.stops, stop)
	}
	return s, nil
}

// metricsPort is the daemon pod's "metrics" container port (the chart's default otherwise).
func metricsPort(p *corev1.Pod) int32 {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return port.ContainerPort
			}
		}
	}
	return 9966
}

// Close stops every daemon.
func (s *Set) Close() {
	for _, stop := range s.stops {
		stop()
	}
	for _, d := range s.ByNode {
		d.stop()
	}
}

// installChart installs the daemon chart (embedded from deploy/) as the isoobs
// Helm release, exactly as `kubectl isoobs install --components isoobs` does:
// its DaemonSet makes one daemon pod per node. It also checks that the
// plugin's discovery defaults find those pods.
func installChart(ctx context.Context, lab *testlab.Lab) error {
	spec := install.Specs(values.EditionOSS)[install.ComponentIsoobs]
	if spec.Namespace != cluster.DefaultNamespace {
		return fmt.Errorf("the installer puts the daemon in namespace %q, the plugin looks in %q", spec.Namespace, cluster.DefaultNamespace)
	}
	flags := genericclioptions.NewConfigFlags(false)
	kubeconfig := lab.Kubeconfig()
	flags.KubeConfig = &kubeconfig
	inst, err := install.New(flags, io.Discard)
	if err != nil {
		return err
	}
	// HubbleAddressAuto as the plugin sets it: the lab runs no Cilium, so Hubble is off.
	o := install.Options{Values: values.Defaults(), Components: []install.Component{install.ComponentIsoobs},
		Sources: map[install.Component]install.Source{}, KubeVersion: controlplane.K8sVersion, HubbleAddressAuto: true}
	if _, err := inst.Install(ctx, o); err != nil {
		return fmt.Errorf("install the isoobs chart: %w", err)
	}
	ds, err := lab.Client().AppsV1().DaemonSets(spec.Namespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.DefaultSelector})
	if err != nil {
		return err
	}
	if len(ds.Items) != 1 {
		return fmt.Errorf("%d DaemonSets in %s match the plugin's default selector %s after install, want 1", len(ds.Items), spec.Namespace, cluster.DefaultSelector)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serviceAccountKubeconfig writes a kubeconfig holding a token of the installed DaemonSet's
// ServiceAccount (TokenRequest, 24 h), into the control plane's directory (removed with the lab).
func serviceAccountKubeconfig(ctx context.Context, lab *testlab.Lab) (path, account string, err error) {
	cs := lab.Client()
	dss, err := cs.AppsV1().DaemonSets(cluster.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.DefaultSelector})
	if err != nil {
		return "", "", err
	}
	if len(dss.Items) != 1 {
		return "", "", fmt.Errorf("%d DaemonSets in %s match %s, want the chart's one", len(dss.Items), cluster.DefaultNamespace, cluster.DefaultSelector)
	}
	ns, sa := dss.Items[0].Namespace, dss.Items[0].Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	expiry := int64((24 * time.Hour).Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("a token for ServiceAccount %s/%s: %w", ns, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: lab.CP.APIServerURL, CertificateAuthority: lab.CP.CAFile}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["daemon"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: sa}
	cfg.CurrentContext = "daemon"
	path = filepath.Join(lab.CP.Dir, "isoobs-daemon-"+ns+"-"+sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", "", err
	}
	return path, ns + "/" + sa, nil
}

// ChartServiceAccountConfig is a client config for in-process daemons (e.g. daemon.New in a test)
// holding a token of the chart's ServiceAccount: the ServiceAccount, ClusterRole and
// ClusterRoleBinding rendered from the chart (nothing else of it) are created when missing, so the
// daemon runs with exactly the chart's RBAC and never the lab's admin credential.
func ChartServiceAccountConfig(ctx context.Context, lab *testlab.Lab) (*rest.Config, error) {
	ch, err := deploy.Chart()
	if err != nil {
		return nil, err
	}
	spec := install.Specs(values.EditionOSS)[install.ComponentIsoobs]
	vals, err := install.FinalValues(install.ComponentIsoobs, values.Defaults(), nil)
	if err != nil {
		return nil, err
	}
	rel, err := install.Render(ch, spec, vals, controlplane.K8sVersion, nil)
	if err != nil {
		return nil, err
	}
	objs, err := install.Objects(rel)
	if err != nil {
		return nil, err
	}
	cs := lab.Client()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: spec.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(lab.RESTConfig())
	if err != nil {
		return nil, err
	}
	sa := ""
	for _, m := range objs {
		var res schema.GroupVersionResource
		switch m.Object.GetKind() {
		case "ServiceAccount":
			res, sa = corev1.SchemeGroupVersion.WithResource("serviceaccounts"), m.Object.GetName()
		case "ClusterRole":
			res = rbacv1.SchemeGroupVersion.WithResource("clusterroles")
		case "ClusterRoleBinding":
			res = rbacv1.SchemeGroupVersion.WithResource("clusterrolebindings")
		default:
			continue
		}
		r := dyn.Resource(res)
		var ri dynamic.ResourceInterface = r
		if m.Object.GetNamespace() != "" {
			ri = r.Namespace(m.Object.GetNamespace())
		}
		if _, err := ri.Create(ctx, m.Object, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("the chart's %s %s: %w", m.Object.GetKind(), m.Object.GetName(), err)
		}
	}
	if sa == "" {
		return nil, fmt.Errorf("the chart renders no ServiceAccount")
	}
	expiry := int64((24 * time.Hour).Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(spec.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("a token for ServiceAccount %s/%s: %w", spec.Namespace, sa, err)
	}
	return &rest.Config{Host: lab.CP.APIServerURL, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAFile: lab.CP.CAFile}}, nil
}
