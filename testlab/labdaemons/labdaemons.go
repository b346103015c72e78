//go:build linux

// Package labdaemons puts the isoobs daemon on every lab node the way a cluster
// has it: the real chart (as `kubectl isoobs install` renders it) makes one
// daemon Pod per node, and each pod's port-forward reaches a real isoobs-daemon
// process observing that node's cgroup root. The plugin then runs in cluster
// mode against the lab kubeconfig, exactly as a user's would.
//
// Test infrastructure only.
package labdaemons

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

// Daemon is one node's real isoobs-daemon process.
type Daemon struct {
	Node string
	Port int
	Cmd  *exec.Cmd
}

// Kill stops the daemon abruptly, like a crashed pod.
func (d *Daemon) Kill() error {
	if err := d.Cmd.Process.Kill(); err != nil {
		return err
	}
	_, _ = d.Cmd.Process.Wait()
	return nil
}

// Set is the daemons of every lab node.
type Set struct {
	ByNode map[string]*Daemon
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

// Start runs one daemon per lab node, applies the chart's ServiceAccount and
// DaemonSet, waits for a daemon pod per node and routes each pod's
// port-forward to its node's daemon. Close stops the processes.
func Start(ctx context.Context, lab *testlab.Lab, opts Options) (_ *Set, err error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	s := &Set{ByNode: map[string]*Daemon{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, node := range lab.NodeNames() {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := append([]string{"--node-name", node, "--cgroup-root", lab.Node(node).CgroupRoot(),
			"--kubeconfig", lab.Kubeconfig(), "--grpc-listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--metrics-listen", "", "--log-level", "warn"}, opts.ExtraArgs...)
		cmd := exec.Command(opts.Binary, args...)
		cmd.Stdout, cmd.Stderr = opts.Stderr, opts.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start isoobs-daemon for %s: %w", node, err)
		}
		s.ByNode[node] = &Daemon{Node: node, Port: port, Cmd: cmd}
	}
	objs, err := ChartObjects()
	if err != nil {
		return nil, err
	}
	if err := lab.Apply(ctx, objs...); err != nil {
		return nil, err
	}
	pods, err := lab.WaitPodsReady(ctx, cluster.DefaultNamespace, cluster.DefaultSelector, len(s.ByNode))
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		d := s.ByNode[p.Spec.NodeName]
		if d == nil {
			return nil, fmt.Errorf("daemon pod %s is on %q, not a lab node", p.Name, p.Spec.NodeName)
		}
		target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(d.Port))
		if err := lab.ForwardPodPort(ctx, p.Namespace, p.Name, cluster.DefaultPort, target); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Close stops every daemon.
func (s *Set) Close() {
	for _, d := range s.ByNode {
		if d.Cmd.ProcessState == nil {
			_ = d.Cmd.Process.Signal(syscall.SIGTERM)
			_, _ = d.Cmd.Process.Wait()
		}
	}
}

// ChartObjects renders the daemon chart (deploy/chart) with the installer's
// spec and returns its ServiceAccount and DaemonSet: the objects that make
// daemon pods exist. It checks that the plugin's discovery finds them.
func ChartObjects() ([]any, error) {
	spec := install.Specs(values.EditionOSS)[install.ComponentIsoobs]
	if spec.Namespace != cluster.DefaultNamespace {
		return nil, fmt.Errorf("the installer puts the daemon in namespace %q, the plugin looks in %q", spec.Namespace, cluster.DefaultNamespace)
	}
	ch, err := deploy.Chart()
	if err != nil {
		return nil, err
	}
	rel, err := install.Render(ch, spec, map[string]any{}, controlplane.K8sVersion, nil)
	if err != nil {
		return nil, err
	}
	manifests, err := install.Objects(rel)
	if err != nil {
		return nil, err
	}
	selector, err := labels.Parse(cluster.DefaultSelector)
	if err != nil {
		return nil, err
	}
	var objs []any
	for _, m := range manifests {
		var obj any
		switch m.Object.GetKind() {
		case "DaemonSet":
			if !selector.Matches(labels.Set(m.Object.GetLabels())) {
				return nil, fmt.Errorf("the chart's DaemonSet labels %v do not match the plugin's default selector %s", m.Object.GetLabels(), cluster.DefaultSelector)
			}
			obj = &appsv1.DaemonSet{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		default:
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m.Object.Object, obj); err != nil {
			return nil, err
		}
		objs = append(objs, obj)
	}
	if len(objs) != 2 {
		return nil, fmt.Errorf("the chart rendered %d of ServiceAccount+DaemonSet, want 2", len(objs))
	}
	return objs, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
