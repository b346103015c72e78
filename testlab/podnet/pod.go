package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Gateways the pod's default routes point at: link-local addresses that every host veth owns
// (Calico and Cilium point pods at a link-local gateway too): no bridge, no per-node gateway.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

// PodIfName is the pod side of the veth pair.
const PodIfName = "eth0"

type Pod struct {
	Namespace, Name string
	UID             types.UID
	IPv4, IPv6      netip.Addr
	CgroupPath      string // the pod cgroup (kubepods.slice/.../kubepods-<qos>-pod<uid>.slice)
	CgroupID        uint64 // inode of CgroupPath
	NetnsPath       string // /proc/<pause pid>/ns/net
	MountNsPath     string // /proc/<pause pid>/ns/mnt: the host's mounts, plus the pod's resolv.conf
	HostVeth        string
	Node            string

	QOSClass            corev1.PodQOSClass
	ContainerCgroupPath string // where Pod.Command processes run, below CgroupPath
	ContainerCgroupID   uint64
	PausePID            int

	node       *Node
	stateFile  string
	cgroupFD   *os.File // ContainerCgroupPath, kept open for UseCgroupFD
	pauseDone  chan struct{}
	mu         sync.Mutex
	localAddrs []netip.Addr
	resolvConf string // file bind-mounted on the pod's /etc/resolv.conf
	closers    []func()
	tornDown   bool
}

func (p *Pod) String() string { return p.Namespace + "/" + p.Name }

// AttachPod gives a Pod object (UID set, status.podIPs already set by the caller from AllocateIPs, spec.nodeName == node) its node side:
// netns with veth pair to the host, the pod IPs (v4 /32 and v6 /128 with routes, host routes back), cgroup v2 dir named from UID and QoS class.
// Idempotent for the same UID.
func (n *Node) AttachPod(pod *corev1.Pod) (*Pod, error) {
	if pod == nil || pod.UID == "" {
		return nil, errors.New("podnet: AttachPod needs a pod with metadata.uid set (create it in the API server first)")
	}
	if pod.Spec.NodeName != n.cfg.Name {
		return nil, fmt.Errorf("podnet: pod %s/%s is bound to node %q, not %q", pod.Namespace, pod.Name, pod.Spec.NodeName, n.cfg.Name)
	}
	v4, v6, err := podIPs(pod)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("podnet: node %s is closed", n.cfg.Name)
	}
	if p, ok := n.pods[pod.UID]; ok {
		return p, nil
	}
	for _, other := range n.pods {
		if (v4.IsValid() && other.IPv4 == v4) || (v6.IsValid() && other.IPv6 == v6) {
			return nil, fmt.Errorf("podnet: pod %s/%s wants an address pod %s already has; allocate with Node.AllocateIPs", pod.Namespace, pod.Name, other)
		}
	}
	p, err := n.attach(pod, v4, v6)
	if err != nil {
		return nil, err
	}
	n.pods[pod.UID] = p
	return p, nil
}

func podIPs(pod *corev1.Pod) (v4, v6 netip.Addr, err error) {
	ips := make([]string, 0, 2)
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	for _, s := range ips {
		a, perr := netip.ParseAddr(s)
		if perr != nil {
			return v4, v6, fmt.Errorf("podnet: pod %s/%s has invalid status.podIPs entry %q", pod.Namespace, pod.Name, s)
		}
		if a.Is4() || a.Is4In6() {
			v4 = a.Unmap()
		} else {
			v6 = a
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, fmt.Errorf("podnet: pod %s/%s has no status.podIPs; set them from Node.AllocateIPs before AttachPod", pod.Namespace, pod.Name)
	}
	return v4, v6, nil
}

func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

func (n *Node) attach(pod *corev1.Pod, v4, v6 netip.Addr) (_ *Pod, err error) {
	qos := QOSClassOf(pod)
	podCg := filepath.Join(n.cfg.CgroupParent, podCgroupRel(n.cfg.Driver, qos, pod.UID))
	p := &Pod{
		Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		IPv4: v4, IPv6: v6,
		CgroupPath:          podCg,
		ContainerCgroupPath: filepath.Join(podCg, containerCgroupName(n.cfg.Driver, shortHash(string(pod.UID)+"/main", 64))),
		HostVeth:            n.cfg.LabID + "-" + shortHash(string(pod.UID), 8),
		Node:                n.cfg.Name,
		QOSClass:            qos,
		node:                n,
		pauseDone:           make(chan struct{}),
	}
	sandboxCg := filepath.Join(podCg, containerCgroupName(n.cfg.Driver, shortHash(string(pod.UID)+"/sandbox", 64)))
	p.stateFile = filepath.Join(labDir(n.cfg.LabID), "pods", shortHash(string(pod.UID), 16)+".json")
	st := podState{UID: string(pod.UID), Node: n.cfg.Name, HostVeth: p.HostVeth, CgroupPath: podCg}
	if err := writeJSON(p.stateFile, st); err != nil {
		return nil, fmt.Errorf("podnet: writing pod state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = p.teardown()
		}
	}()

	// cgroups: pod dir, the sandbox (pause) container and the main container below it.
	for _, d := range []string{sandboxCg, p.ContainerCgroupPath} {
		if _, err := mkdirCgroups(d); err != nil {
			return nil, fmt.Errorf("podnet: %w", err)
		}
	}
	if p.CgroupID, err = cgroupInode(podCg); err != nil {
		return nil, err
	}
	if p.ContainerCgroupID, err = cgroupInode(p.ContainerCgroupPath); err != nil {
		return nil, err
	}
	if p.cgroupFD, err = os.Open(p.ContainerCgroupPath); err != nil {
		return nil, fmt.Errorf("podnet: opening container cgroup: %w", err)
	}

	// The pause process creates and holds the netns. Pdeathsig kills it with this process, and
	// with it the netns and the veth pair, so a crashed lab leaves only cgroup dirs and state.
	if err := p.startPause(sandboxCg); err != nil {
		return nil, err
	}
	st.Pause = owner{PID: p.PausePID}
	if st.Pause.Start, err = processStartTime(p.PausePID); err != nil {
		return nil, fmt.Errorf("podnet: pause process of %s died at start: %w", p, err)
	}
	if err := writeJSON(p.stateFile, st); err != nil {
		return nil, fmt.Errorf("podnet: writing pod state: %w", err)
	}
	p.NetnsPath = fmt.Sprintf("/proc/%d/ns/net", p.PausePID)
	p.MountNsPath = fmt.Sprintf("/proc/%d/ns/mnt", p.PausePID)
	if err := p.plumb(); err != nil {
		return nil, fmt.Errorf("podnet: network for pod %s: %w", p, err)
	}
	return p, nil
}

// spawner owns one OS thread for the life of the process: Pdeathsig fires when the thread
// that started a child exits, and Go may retire other threads at any time.
var spawner = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
})

func onSpawnerThread(f func() error) error {
	done := make(chan error, 1)
	spawner() <- func() { done <- f() }
	return <-done
}

func (p *Pod) startPause(sandboxCg string) error {
	fd, err := os.Open(sandboxCg)
	if err != nil {
		return fmt.Errorf("podnet: opening sandbox cgroup: %w", err)
	}
	defer fd.Close()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return fmt.Errorf("podnet: the pause process needs coreutils sleep: %w", err)
	}
	cmd := exec.Command(sleep, "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		Pdeathsig:   syscall.SIGKILL,
		UseCgroupFD: true,
		CgroupFD:    int(fd.Fd()),
	}
	if err := onSpawnerThread(cmd.Start); err != nil {
		return fmt.Errorf("podnet: starting pause process for %s: %w", p, err)
	}
	p.PausePID = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(p.pauseDone)
	}()
	return nil
}

// plumb creates the veth pair and configures both ends.
func (p *Pod) plumb() error {
	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return fmt.Errorf("opening netns: %w", err)
	}
	defer ns.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth, MTU: 1500},
		PeerName:      PodIfName,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", p.HostVeth, err)
	}
	host, err := netlink.LinkByName(p.HostVeth)
	if err != nil {
		return err
	}
	// No DAD so fe80::1 is usable at once.
	for file, val := range map[string]string{
		"/proc/sys/net/ipv6/conf/" + p.HostVeth + "/accept_dad": "0",
		"/proc/sys/net/ipv6/conf/" + p.HostVeth + "/accept_ra":  "0",
	} {
		if err := os.WriteFile(file, []byte(val), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", file, err)
		}
	}
	// The host end owns the IPv4 gateway too (every host veth has it), so the pod's ARP for it
	// is answered as for any local address and packets addressed to it stay on the host.
	// (Proxy ARP, as Calico does it, needs a route to the gateway, which the egress rules
	// deny to pods.)
	if p.IPv4.IsValid() {
		if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(GatewayV4, 32)), Scope: int(netlink.SCOPE_LINK)}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", GatewayV4, p.HostVeth, err)
		}
	}
	if p.IPv6.IsValid() {
		if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(GatewayV6, 64)), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", GatewayV6, p.HostVeth, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in pod netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := h.LinkByName(PodIfName)
	if err != nil {
		return err
	}
	for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
		if !a.IsValid() {
			continue
		}
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, a.BitLen())), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("adding %s to pod: %w", a, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return err
	}
	if p.IPv6.IsValid() {
		if err := waitLocalRoute(h, p.IPv6, eth.Attrs().Index); err != nil {
			return err
		}
		// The host must own fe80::1 before the pod asks for it, or the pod's neighbour
		// discovery backs off for a second.
		hh, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		err = waitLocalRoute(hh, GatewayV6, host.Attrs().Index)
		hh.Close()
		if err != nil {
			return err
		}
	}
	idx := eth.Attrs().Index
	if p.IPv4.IsValid() {
		gw := prefixNet(netip.PrefixFrom(GatewayV4, 32))
		if err := h.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("pod route to %s: %w", GatewayV4, err)
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.IP, Src: p.IPv4.AsSlice()}); err != nil {
			return fmt.Errorf("pod default route: %w", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(p.IPv4, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("host route to %s: %w", p.IPv4, err)
		}
	}
	if p.IPv6.IsValid() {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.MustParsePrefix("::/0")), Gw: GatewayV6.AsSlice(), Src: p.IPv6.AsSlice()}); err != nil {
			return fmt.Errorf("pod default route v6: %w", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(p.IPv6, 128))}); err != nil {
			return fmt.Errorf("host route to %s: %w", p.IPv6, err)
		}
	}
	return nil
}

// waitLocalRoute waits for the kernel to install the local route of a new IPv6 address: it does
// so from its DAD work queue even with IFA_F_NODAD, a moment after the address add returns, and
// packets to the address arriving before that are dropped (Ip6InNoRoutes).
func waitLocalRoute(h *netlink.Handle, a netip.Addr, linkIndex int) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: prefixNet(netip.PrefixFrom(a, 128)), LinkIndex: linkIndex}
	deadline := time.Now().Add(3 * time.Second)
	for {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V6, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err == nil && len(rs) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel did not install the local route of %s within 3s", a)
		}
		time.Sleep(time.Millisecond)
	}
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// DetachPod removes the pod's node side: its processes, veth, netns and cgroup dirs.
func (n *Node) DetachPod(uid types.UID) error {
	n.mu.Lock()
	p, ok := n.pods[uid]
	delete(n.pods, uid)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return p.teardown()
}

// teardown undoes attach; safe on a partly attached pod and when called twice.
func (p *Pod) teardown() error {
	p.mu.Lock()
	if p.tornDown {
		p.mu.Unlock()
		return nil
	}
	p.tornDown = true
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, c := range closers {
		c()
	}
	var errs []error
	// Deleting the host end removes the pair and the host routes synchronously; netns teardown
	// after the pause process dies would do it too, but asynchronously.
	if l, err := netlink.LinkByName(p.HostVeth); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("deleting veth %s: %w", p.HostVeth, err))
		}
	}
	if err := RemoveCgroupTree(p.CgroupPath); err != nil {
		errs = append(errs, err)
	}
	if p.PausePID > 0 {
		select {
		case <-p.pauseDone:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("pause process %d of %s did not exit", p.PausePID, p))
		}
	}
	if p.cgroupFD != nil {
		p.cgroupFD.Close()
	}
	// Empty qos-level dirs (kubepods-burstable.slice) stay, as on a real node.
	if p.resolvConf != "" {
		_ = os.Remove(p.resolvConf)
	}
	if len(errs) == 0 {
		_ = os.Remove(p.stateFile)
		p.node.mu.Lock()
		p.node.releaseIPs(p)
		p.node.mu.Unlock()
	}
	return errors.Join(errs...)
}

// KubeResolvConf is the resolv.conf the kubelet gives a ClusterFirst pod in namespace.
func KubeResolvConf(namespace, clusterDomain string, nameservers ...netip.Addr) string {
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "search %s.svc.%s svc.%s %s\n", namespace, clusterDomain, clusterDomain, clusterDomain)
	for _, ns := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	b.WriteString("options ndots:5\n")
	return b.String()
}

// SetResolvConf gives the pod's processes this /etc/resolv.conf (see KubeResolvConf), bind
// mounted in the pod's own mount namespace: the host's file is untouched, and the mount goes
// away with the pod. Calling it again replaces the content.
func (p *Pod) SetResolvConf(content string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tornDown {
		return fmt.Errorf("podnet: pod %s is detached", p)
	}
	file := strings.TrimSuffix(p.stateFile, ".json") + ".resolv.conf"
	// Rewrite in place: a bind mount follows the inode, so no rename.
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		return fmt.Errorf("podnet: writing resolv.conf for %s: %w", p, err)
	}
	if p.resolvConf != "" {
		return nil
	}
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return fmt.Errorf("podnet: the host has no /etc/resolv.conf to mount over: %w", err)
	}
	// rslave first: on a host whose / is shared, the bind mount must not propagate back.
	for _, args := range [][]string{{"--make-rslave", "/"}, {"--bind", file, "/etc/resolv.conf"}} {
		cmd := exec.Command("nsenter", append([]string{"--mount=" + p.MountNsPath, "--", "mount"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("podnet: mount %v in pod %s: %v: %s", args, p, err, strings.TrimSpace(string(out)))
		}
	}
	p.resolvConf = file
	return nil
}

// Command returns a command that runs inside the pod: joined to its cgroup and its netns (join the cgroup before entering the netns).
// The process starts in the pod's container cgroup (clone into the cgroup, then nsenter enters
// the netns and execs name), so a probe sees the container cgroup and walks up to the pod's.
// It is SIGKILLed if this process dies.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	// --wd=. keeps cmd.Dir: entering a mount namespace would reset the cwd to its root.
	nsArgs := append([]string{"--net=" + p.NetnsPath, "--mount=" + p.MountNsPath, "--wd=.", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsArgs...)
	p.mu.Lock()
	down := p.tornDown
	p.mu.Unlock()
	if down || p.cgroupFD == nil {
		cmd.Err = fmt.Errorf("podnet: pod %s is detached", p)
		return cmd
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		UseCgroupFD: true,
		CgroupFD:    int(p.cgroupFD.Fd()),
		Pdeathsig:   syscall.SIGKILL,
	}
	return cmd
}

// InNetns runs f on an OS thread that is inside the pod's netns: sockets f opens live there.
func (p *Pod) InNetns(f func() error) error {
	target, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return fmt.Errorf("podnet: pod %s netns: %w", p, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := f()
		// Leave the thread locked (so Go retires it) if it cannot go back.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// AddLocalAddress adds an extra address on the pod's loopback and routes it from the host to this pod (used to give CoreDNS the kube-dns ClusterIP, since the lab has no kube-proxy).
func (p *Pod) AddLocalAddress(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return errors.New("podnet: AddLocalAddress needs a valid address")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.localAddrs {
		if a == addr {
			return nil
		}
	}
	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return fmt.Errorf("podnet: pod %s netns: %w", p, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	pfx := netip.PrefixFrom(addr, addr.BitLen())
	// IPv6 would silently add a second nexthop to an existing route: refuse instead.
	if existing, err := netlink.RouteListFiltered(familyOf(addr), &netlink.Route{Dst: prefixNet(pfx)}, netlink.RT_FILTER_DST); err == nil && len(existing) > 0 {
		return fmt.Errorf("podnet: %s is already routed on this host (link index %d): another pod or a concurrently running lab uses it; pick another address (e.g. another ServiceCIDR)", addr, existing[0].LinkIndex)
	}
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(pfx), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("podnet: adding %s to pod %s: %w", addr, p, err)
	}
	if addr.Is6() {
		if err := waitLocalRoute(h, addr, lo.Attrs().Index); err != nil {
			return err
		}
	}
	host, err := netlink.LinkByName(p.HostVeth)
	if err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: prefixNet(pfx)}
	switch {
	case addr.Is4():
		// IPv4 ARP answers for any local address (weak host model).
		route.Scope = netlink.SCOPE_LINK
	case p.IPv6.IsValid():
		// IPv6 neighbour discovery only answers for addresses on eth0, so route via the pod's own address.
		route.Gw = p.IPv6.AsSlice()
		route.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("podnet: host route %s -> pod %s: %w (is the address already routed to another pod?)", addr, p, err)
	}
	p.localAddrs = append(p.localAddrs, addr)
	return nil
}

// ForwardTCP listens on listenAddr inside the pod's netns and relays each connection to
// target as dialed from this process (the root netns). CoreDNS uses it to reach an API server
// bound to 127.0.0.1 through the very same https://127.0.0.1:port its kubeconfig names, so
// certificates still match. The forwarder stops with the pod or with the returned stop func.
func (p *Pod) ForwardTCP(listenAddr, target string) (stop func(), err error) {
	var ln net.Listener
	if err := p.InNetns(func() error {
		var lerr error
		ln, lerr = net.Listen("tcp", listenAddr)
		return lerr
	}); err != nil {
		return nil, fmt.Errorf("podnet: listening on %s in pod %s: %w", listenAddr, p, err)
	}
	var once sync.Once
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var cmu sync.Mutex
	track := func(c net.Conn, add bool) bool {
		cmu.Lock()
		defer cmu.Unlock()
		if conns == nil {
			return false
		}
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
		return true
	}
	stop = func() {
		once.Do(func() {
			ln.Close()
			cmu.Lock()
			for c := range conns {
				c.Close()
			}
			conns = nil
			cmu.Unlock()
			wg.Wait()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				if !track(in, true) || !track(out, true) {
					return
				}
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{}, 2)
				go func() { copyConn(out, in); done <- struct{}{} }()
				go func() { copyConn(in, out); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	p.mu.Lock()
	if p.tornDown {
		p.mu.Unlock()
		stop()
		return nil, fmt.Errorf("podnet: pod %s is detached", p)
	}
	p.closers = append(p.closers, stop)
	p.mu.Unlock()
	return stop, nil
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	// Half-close so the peer sees EOF; a full close would cut responses still in flight.
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
