//go:build linux

// Package realnode joins a real node to the lab's control plane: a kubelet v1.34 (built like
// the control plane) on Debian's containerd + runc with a private root, state and socket, CNI
// bridge + host-local on a subnet inside the lab's own address range, and images imported from
// local tarballs (nothing is pulled; the sandbox image is a pause binary built here). Pods on it
// are real containers: seccomp, capabilities, read-only roots, hostPath mounts, projected
// ServiceAccount tokens, and logs/exec/port-forward through the API server → kubelet → CRI.
//
// Pods reach the kubernetes Service (a DNAT of its ClusterIP:443 to the API server on
// 127.0.0.1, with route_localnet on the bridge; the lab has no kube-proxy) and the kube-dns
// ClusterIP (routed on the host to the lab's CoreDNS). Close removes everything the node made,
// including what the kubelet and containerd put in hard-coded host places; a crashed run is
// cleaned by the next Start (see StateFile).
//
// Test infrastructure only.
package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/isoobs/isoobs/release/image"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

const (
	// networkName is the CNI network (libcni caches results as <name>-<container id>).
	networkName = "isoobs-realnode"
	// PauseImage is containerd's sandbox_image, built from ./pause and imported at start.
	PauseImage = "isoobs.local/pause:lab"
	// Label is set on the node (by its kubelet) with the value "true".
	Label = "isoobs.dev/real-node"
	// TaintKey keeps pods off the node unless they tolerate it (DaemonSets tolerating
	// everything, and the pods a test puts there); the lab's emulated workloads need kwok nodes.
	TaintKey = "isoobs.dev/real-node"
)

// Toleration lets a pod run on the real node.
var Toleration = corev1.Toleration{Key: TaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}

// Config of Start.
type Config struct {
	// Name is the node name and the kubelet's identity (system:node:<Name>).
	Name string
	// LabID names host objects (the bridge is isorn<LabID>).
	LabID string
	// Dir holds containerd's root and state, the kubelet's root, CNI state, certs and logs.
	Dir string
	// CP is the lab's control plane (its CA signs the kubelet's certificates).
	CP *controlplane.ControlPlane
	// Subnet is the pod subnet of the bridge; its first address is the node IP.
	Subnet netip.Prefix
	// DNSServiceIP is the kube-dns ClusterIP (the kubelet's clusterDNS).
	DNSServiceIP netip.Addr
	// Logf gets progress and teardown problems (default: discarded).
	Logf func(string, ...any)
}

// Node is a running real node. Close it.
type Node struct {
	Name   string
	IP     netip.Addr
	Subnet netip.Prefix
	// Socket is containerd's address (ctr -a / crictl --runtime-endpoint).
	Socket string
	// Timings of Start's steps.
	Timings map[string]time.Duration

	cfg        Config
	st         *state
	containerd *controlplane.Process
	kubelet    *controlplane.Process
	closeOnce  sync.Once
	closeErr   error
}

// Binaries the node runs: the kubelet from the lab's cache, containerd/ctr/runc from Debian.
type Binaries struct{ Kubelet, Containerd, Ctr, Runc string }

// KubeletPath is where testlab/scripts/build-bins.sh node puts the kubelet.
func KubeletPath() string {
	return filepath.Join(controlplane.CacheDir(), "bin", "k8s-node-"+controlplane.K8sVersion, "kubelet")
}

var ensureMu sync.Mutex

// EnsureBinaries finds the node's programs, building the kubelet (~12 min cold, once per
// machine) when it is not cached.
func EnsureBinaries() (Binaries, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	b := Binaries{Kubelet: KubeletPath()}
	if _, err := os.Stat(b.Kubelet); err != nil {
		root, err := controlplane.RepoRoot()
		if err != nil {
			return b, err
		}
		script := filepath.Join(root, "testlab", "scripts", "build-bins.sh")
		if out, err := exec.Command("nice", "bash", script, "node").CombinedOutput(); err != nil {
			return b, fmt.Errorf("building the kubelet with %s node: %v\n%s", script, err, out)
		}
	}
	var missing []string
	for _, p := range []struct {
		dst  *string
		name string
	}{{&b.Containerd, "containerd"}, {&b.Ctr, "ctr"}, {&b.Runc, "runc"}} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			missing = append(missing, p.name)
		}
		*p.dst = path
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("the real node needs %s from Debian: apt-get install containerd runc containernetworking-plugins (make deps)", strings.Join(missing, ", "))
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return b, errors.New("the real node needs the CNI plugins in /usr/lib/cni: apt-get install containernetworking-plugins (make deps)")
	}
	return b, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start brings the node up and returns once it is Ready without the not-ready taint.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Name == "" || cfg.LabID == "" || cfg.Dir == "" || cfg.CP == nil || !cfg.Subnet.Addr().Is4() {
		return nil, errors.New("realnode: Name, LabID, Dir, CP and an IPv4 Subnet are required")
	}
	bins, err := EnsureBinaries()
	if err != nil {
		return nil, err
	}
	if err := SweepStale(cfg.Logf); err != nil {
		return nil, fmt.Errorf("realnode: %w", err)
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	n := &Node{Name: cfg.Name, Subnet: cfg.Subnet.Masked(), cfg: cfg, Timings: map[string]time.Duration{},
		Socket: filepath.Join(cfg.Dir, "containerd", "containerd.sock")}
	n.IP = n.Subnet.Addr().Next()
	t0 := time.Now()
	self, _ := processStart(os.Getpid())
	n.st = &state{Owner: os.Getpid(), OwnerStart: self, Dir: cfg.Dir, Socket: n.Socket}
	if err := n.st.recordBefore(); err != nil {
		return nil, err
	}
	if err := n.st.save(); err != nil {
		return nil, fmt.Errorf("realnode: %w", err)
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.network(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx, bins); err != nil {
		return nil, err
	}
	n.Timings["containerd"] = time.Since(t0)
	t := time.Now()
	if err := n.importPause(ctx); err != nil {
		return nil, err
	}
	n.Timings["pause image"] = time.Since(t)
	t = time.Now()
	if err := n.startKubelet(ctx, bins); err != nil {
		return nil, err
	}
	n.Timings["kubelet to Ready"] = time.Since(t)
	n.Timings["total"] = time.Since(t0)
	return n, nil
}

// network makes the bridge (the node IP must be a non-loopback local address), the route to
// the kubernetes Service and the egress rules.
func (n *Node) network() error {
	n.st.Bridge, n.st.Subnet = "isorn"+n.cfg.LabID, n.Subnet.String()
	if err := n.st.save(); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.st.Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("realnode: bridge %s: %w", n.st.Bridge, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.IP.AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("realnode: address %s on %s: %w", n.IP, n.st.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	// The kubernetes Service: DNAT to the API server on loopback, allowed by route_localnet.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+n.st.Bridge+"/route_localnet", []byte("1"), 0); err != nil {
		return fmt.Errorf("realnode: route_localnet: %w", err)
	}
	svcIP := n.cfg.CP.ServiceCIDR.Masked().Addr().Next()
	n.st.DNAT = []string{"-i", n.st.Bridge, "-d", svcIP.String() + "/32", "-p", "tcp", "--dport", "443",
		"-m", "comment", "--comment", "isoobs-realnode kubernetes Service",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("127.0.0.1:%d", n.cfg.CP.APIPort)}
	if err := n.st.save(); err != nil {
		return err
	}
	if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", "-A", "PREROUTING"}, n.st.DNAT...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("realnode: DNAT of the kubernetes Service: %v: %s", err, out)
	}
	n.st.EgressRules = true
	if err := n.st.save(); err != nil {
		return err
	}
	return addEgressRules(n.Subnet.String())
}

func (n *Node) path(p ...string) string { return filepath.Join(append([]string{n.cfg.Dir}, p...)...) }

func (n *Node) startContainerd(ctx context.Context, bins Binaries) error {
	for _, d := range []string{"containerd", "cni/net.d", "cni/state", "logs"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (the sandbox asks -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %[6]q
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[9]q
`, n.path("containerd", "root"), n.path("containerd", "state"), n.Socket, n.Socket+".ttrpc", PauseImage,
		bins.Runc, n.path("containerd", "runc"), n.path("cni", "net.d"), n.path("containerd", "opt"))
	if err := os.WriteFile(n.path("containerd", "config.toml"), []byte(conf), 0o644); err != nil {
		return err
	}
	gw := n.IP.String()
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": %q,
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q,
      "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`, networkName, n.st.Bridge, n.path("cni", "state"), n.Subnet.String(), gw)
	if err := os.WriteFile(n.path("cni", "net.d", "10-"+networkName+".conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	p, err := controlplane.StartProcess(n.path("logs"), "containerd", bins.Containerd, "--config", n.path("containerd", "config.toml"))
	if err != nil {
		return err
	}
	n.containerd = p
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if !p.Running() {
			return p.Failure("exited during start")
		}
		if _, err := n.Ctr(wctx, "version"); err == nil {
			return nil
		}
		select {
		case <-wctx.Done():
			return p.Failure("did not answer on " + n.Socket)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ctr runs `ctr -a <socket> -n k8s.io ARGS` and returns its output.
func (n *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", n.Socket, "-n", "k8s.io"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ImportImage imports an image tarball (OCI layout or docker-archive), as `ctr -n k8s.io images
// import` does for a cluster without a registry.
func (n *Node) ImportImage(ctx context.Context, tarball string) error {
	_, err := n.Ctr(ctx, "images", "import", tarball)
	return err
}

// HasImage reports whether the CRI (k8s.io namespace) has an image of this exact name.
func (n *Node) HasImage(ctx context.Context, ref string) (bool, error) {
	out, err := n.Ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Fields(out) {
		if l == ref {
			return true, nil
		}
	}
	return false, nil
}

// TaskPid returns the host pid of a container's init process (containerID without the
// containerd:// prefix).
func (n *Node) TaskPid(ctx context.Context, containerID string) (int, error) {
	out, err := n.Ctr(ctx, "tasks", "ls")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == containerID {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no task %s in containerd:\n%s", containerID, out)
}

// BuildImage builds a single-platform image (linux/amd64... of this host) holding files (image
// path → host path) with the entrypoint, and writes it as a docker-archive tagged ref.
func BuildImage(path, ref string, entrypoint []string, files map[string]string) error {
	var fs []image.File
	for dst, src := range files {
		fs = append(fs, image.File{Path: dst, Source: src, Mode: 0o755})
	}
	img, err := image.FromFiles(image.Spec{
		Platform:   v1.Platform{OS: "linux", Architecture: goarch()},
		Files:      fs,
		Entrypoint: entrypoint,
		Created:    time.Unix(0, 0),
		CreatedBy:  "isoobs testlab/realnode",
	})
	if err != nil {
		return err
	}
	return image.WriteDockerArchive(path, ref, img)
}

// BuildGoImage builds a Go command of this module statically (CGO off) and makes an image of it
// with the binary as entrypoint at /<base name of pkg>.
func BuildGoImage(ctx context.Context, dir, pkg, ref string) (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	if err := image.BuildBinary(ctx, image.Binary{Dir: root, Package: pkg, Platform: v1.Platform{OS: "linux", Architecture: goarch()},
		LDFlags: "-s -w", Out: bin}); err != nil {
		return "", err
	}
	tar := bin + ".docker.tar"
	in := "/" + filepath.Base(pkg)
	return tar, BuildImage(tar, ref, []string{in}, map[string]string{in: bin})
}

func (n *Node) importPause(ctx context.Context) error {
	tar, err := BuildGoImage(ctx, n.path("containerd"), "./testlab/realnode/pause", PauseImage)
	if err != nil {
		return fmt.Errorf("realnode: pause image: %w", err)
	}
	return n.ImportImage(ctx, tar)
}

func (n *Node) startKubelet(ctx context.Context, bins Binaries) error {
	pki := n.path("kubelet", "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	cp := n.cfg.CP
	clientCrt, clientKey, err := cp.IssueCert(pki, "kubelet-client", controlplane.CertRequest{
		CommonName: "system:node:" + n.Name, Organizations: []string{"system:nodes"}, Client: true})
	if err != nil {
		return err
	}
	servingCrt, servingKey, err := cp.IssueCert(pki, "kubelet-serving", controlplane.CertRequest{
		CommonName: n.Name, DNSNames: []string{n.Name}, IPs: []net.IP{n.IP.AsSlice()}, Server: true})
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: cp.APIServerURL, CertificateAuthority: cp.CAFile}
	kc.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificate: clientCrt, ClientKey: clientKey}
	kc.Contexts["node"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "node"}
	kc.CurrentContext = "node"
	kubeconfig := n.path("kubelet", "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	healthz, err := freePort()
	if err != nil {
		return err
	}
	// Pods with dnsPolicy Default get this; nothing outside the host is reachable anyway.
	resolv := n.path("kubelet", "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+n.cfg.DNSServiceIP.String()+"\n"), 0o644); err != nil {
		return err
	}
	sock := "unix://" + n.Socket
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroupfs: no systemd here; failCgroupV1 false: this host has hybrid cgroups (warning only).
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# RuntimeDefault for every pod, as hardened real nodes run.
seccompDefault: true
containerRuntimeEndpoint: %[1]s
imageServiceEndpoint: %[1]s
address: %[2]s
port: %[3]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[4]d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[5]q}
# Only the API server's client cert (system:masters, signed by the lab CA) gets in.
authorization: {mode: AlwaysAllow}
tlsCertFile: %[6]q
tlsPrivateKeyFile: %[7]q
clusterDNS: [%[8]q]
clusterDomain: cluster.local
resolvConf: %[9]q
registerNode: true
registerWithTaints: [{key: %[10]q, effect: NoSchedule}]
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podLogsDir: %[11]q
logging: {format: text}
`, sock, n.IP, port, healthz, cp.CAFile, servingCrt, servingKey, n.cfg.DNSServiceIP, resolv, TaintKey, n.path("kubelet", "pod-logs"))
	if err := os.WriteFile(n.path("kubelet", "config.yaml"), []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := controlplane.StartProcess(n.path("logs"), "kubelet", bins.Kubelet,
		"--config="+n.path("kubelet", "config.yaml"), "--kubeconfig="+kubeconfig,
		"--root-dir="+n.path("kubelet", "root"), "--cert-dir="+pki,
		"--hostname-override="+n.Name, "--node-ip="+n.IP.String(),
		"--node-labels="+Label+"=true", "--v=1")
	if err != nil {
		return err
	}
	n.kubelet = p
	client := cp.Client()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	err = wait.PollUntilContextCancel(wctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if !p.Running() {
			return false, p.Failure("exited")
		}
		node, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ready := false
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue
				last = fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		for _, t := range node.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
				last += "; taint " + t.Key + " still set (kcm's node-lifecycle controller lifts it)"
				return false, nil
			}
		}
		return ready, nil
	})
	if err != nil {
		return p.Failure(fmt.Sprintf("node %s not Ready without taints in 2m (last: %s)", n.Name, last))
	}
	return nil
}

// KubeletLog is the kubelet's log file; ContainerdLog containerd's.
func (n *Node) KubeletLog() string    { return n.path("logs", "kubelet.log") }
func (n *Node) ContainerdLog() string { return n.path("logs", "containerd.log") }

// Close stops the kubelet, every container and containerd, deletes the Node object and undoes
// every host change. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.kubelet != nil {
			n.kubelet.Stop(5 * time.Second)
		}
		if n.cfg.CP != nil && n.cfg.CP.Client() != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := n.cfg.CP.Client().CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				n.cfg.Logf("realnode: delete node %s: %v", n.Name, err)
			}
			cancel()
		}
		if n.containerd != nil {
			n.containerd.Stop(2 * time.Second)
		}
		n.closeErr = n.st.teardown(n.cfg.Logf)
	})
	return n.closeErr
}

func goarch() string { return runtime.GOARCH }

// SetServiceRoute removes (false) or restores (true) the DNAT that routes the kubernetes Service
// to the API server: pods then cannot reach the API, as on a node whose kube-proxy is broken.
func (n *Node) SetServiceRoute(on bool) error {
	op := "-D"
	if on {
		op = "-A"
	}
	if out, err := exec.Command("iptables", append([]string{"-w", "-t", "nat", op, "PREROUTING"}, n.st.DNAT...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("realnode: iptables %s of the kubernetes Service DNAT: %v: %s", op, err, out)
	}
	return nil
}
