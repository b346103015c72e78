// Package podnet gives lab pods a real node side on this host: a network namespace held by a
// pause process, a veth pair to the root namespace with the pod's IPs and routes (the
// Calico/Cilium style link-local gateway), and a cgroup v2 directory named exactly as the
// kubelet names it, with a container directory below it in which Pod.Command processes run.
//
// All nodes of a lab share the host's root network namespace, so pods on different lab nodes
// reach each other through host routes (IP forwarding is switched on).
//
// Resolver: each pod has its own mount namespace (held by the pause process, entered by
// Pod.Command). Pod.SetResolvConf(KubeResolvConf(ns, "cluster.local", kubeDNSClusterIP)) bind
// mounts a kubelet-style /etc/resolv.conf there; until then pods see the host's file, whose
// nameserver they cannot reach (see egress rules). dnsgen always takes --server explicitly.
//
// Egress: packets from a node's pod CIDRs are routed by the main table without its default
// routes (policy rules at priority 30100/30101), so pods reach pods, routed ClusterIPs and the
// host, and nothing they send leaves the machine.
package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
)

// Cgroup drivers, as in the kubelet's --cgroup-driver.
const (
	DriverSystemd  = "systemd"
	DriverCgroupfs = "cgroupfs"
)

type NodeConfig struct {
	Name         string       // kwok node name, e.g. "lab-node-a"
	LabID        string       // short id (<=5 chars [a-z0-9]) prefixing every host object this lab creates (netns, veth, cgroup dirs) so two labs never collide
	CgroupParent string       // absolute dir: this node's cgroup root, e.g. <cg2>/isoobs-<labid>/<node>; created if missing
	Driver       string       // "systemd" or "cgroupfs" (see package doc of the kubelet naming)
	PodCIDRv4    netip.Prefix // e.g. 10.77.1.0/24
	PodCIDRv6    netip.Prefix // e.g. fd77:0:0:1::/64
}

// Node is one lab node's host side: its cgroup root, its IPAM and its pods.
type Node struct {
	cfg       NodeConfig
	stateFile string

	mu       sync.Mutex
	pods     map[types.UID]*Pod
	nextHost uint64   // next host offset to hand out
	freed    []uint64 // offsets returned by DetachPod, reused first
	used     map[uint64]bool
	closed   bool
}

var labIDRe = regexp.MustCompile(`^[a-z0-9]{1,5}$`)

// nodeRegistry tracks this process's nodes per lab so that one node's Close does not release
// a lab that other nodes still use.
var nodeRegistry = struct {
	sync.Mutex
	byLab map[string]map[string]*Node
}{byLab: map[string]map[string]*Node{}}

func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("podnet: NodeConfig.Name is empty; set it to the kwok node name")
	}
	if !labIDRe.MatchString(cfg.LabID) {
		return nil, fmt.Errorf("podnet: LabID %q must be 1-5 characters of [a-z0-9] (it prefixes veth names, which are limited to 15 bytes)", cfg.LabID)
	}
	switch cfg.Driver {
	case DriverSystemd, DriverCgroupfs:
	case "":
		cfg.Driver = DriverSystemd
	default:
		return nil, fmt.Errorf("podnet: Driver %q is not %q or %q", cfg.Driver, DriverSystemd, DriverCgroupfs)
	}
	if !cfg.PodCIDRv4.IsValid() && !cfg.PodCIDRv6.IsValid() {
		return nil, errors.New("podnet: node needs PodCIDRv4 and/or PodCIDRv6")
	}
	if cfg.PodCIDRv4.IsValid() && (!cfg.PodCIDRv4.Addr().Is4() || cfg.PodCIDRv4.Bits() > 30) {
		return nil, fmt.Errorf("podnet: PodCIDRv4 %s must be an IPv4 prefix of /30 or shorter", cfg.PodCIDRv4)
	}
	if cfg.PodCIDRv6.IsValid() && (!cfg.PodCIDRv6.Addr().Is6() || cfg.PodCIDRv6.Bits() > 126) {
		return nil, fmt.Errorf("podnet: PodCIDRv6 %s must be an IPv6 prefix of /126 or shorter", cfg.PodCIDRv6)
	}
	cfg.PodCIDRv4, cfg.PodCIDRv6 = cfg.PodCIDRv4.Masked(), cfg.PodCIDRv6.Masked()
	if !filepath.IsAbs(cfg.CgroupParent) {
		return nil, fmt.Errorf("podnet: CgroupParent %q must be an absolute directory inside the cgroup v2 mount (see podnet.CgroupV2Mount)", cfg.CgroupParent)
	}
	cfg.CgroupParent = filepath.Clean(cfg.CgroupParent)
	cg2, err := CgroupV2Mount()
	if err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	if rel, err := filepath.Rel(cg2, cfg.CgroupParent); err != nil || rel == "." || rel == ".." || len(rel) >= 3 && rel[:3] == "../" {
		return nil, fmt.Errorf("podnet: CgroupParent %q is not below the cgroup v2 mount %s", cfg.CgroupParent, cg2)
	}

	nodeRegistry.Lock()
	defer nodeRegistry.Unlock()
	if _, dup := nodeRegistry.byLab[cfg.LabID][cfg.Name]; dup {
		return nil, fmt.Errorf("podnet: node %q already exists in lab %q", cfg.Name, cfg.LabID)
	}
	if err := claimLab(cfg.LabID); err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	if err := enableForwarding(); err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	n := &Node{cfg: cfg, pods: map[types.UID]*Pod{}, used: map[uint64]bool{}, nextHost: 2}
	n.stateFile = filepath.Join(labDir(cfg.LabID), "nodes", nodeFileName(cfg.Name))
	// Record the intent before creating anything, so a crash in between is still swept.
	st := nodeState{Name: cfg.Name, CgroupParent: cfg.CgroupParent}
	for _, c := range []netip.Prefix{cfg.PodCIDRv4, cfg.PodCIDRv6} {
		if c.IsValid() {
			st.PodCIDRs = append(st.PodCIDRs, c.String())
		}
	}
	if err := writeJSON(n.stateFile, st); err != nil {
		return nil, fmt.Errorf("podnet: writing node state: %w", err)
	}
	created, err := mkdirCgroups(cfg.CgroupParent)
	st.CreatedDirs = created
	if werr := writeJSON(n.stateFile, st); werr != nil && err == nil {
		err = werr
	}
	if err == nil {
		err = addEgressRules(st.PodCIDRs)
	}
	if err != nil || !isCgroup2Dir(cfg.CgroupParent) {
		removeEgressRules(st.PodCIDRs)
		_ = removeNodeCgroups(st)
		_ = os.Remove(n.stateFile)
		releaseLabIfEmpty(cfg.LabID)
		if err == nil {
			err = fmt.Errorf("%s is not on a cgroup v2 filesystem", cfg.CgroupParent)
		}
		return nil, fmt.Errorf("podnet: node %s cgroup root: %w", cfg.Name, err)
	}
	if nodeRegistry.byLab[cfg.LabID] == nil {
		nodeRegistry.byLab[cfg.LabID] = map[string]*Node{}
	}
	nodeRegistry.byLab[cfg.LabID][cfg.Name] = n
	return n, nil
}

func nodeFileName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8]) + ".json"
}

func (n *Node) Name() string { return n.cfg.Name }

// CgroupRoot is cfg.CgroupParent: what a daemon for this node attaches to.
func (n *Node) CgroupRoot() string { return n.cfg.CgroupParent }

// LabID is the lab id the node was created with.
func (n *Node) LabID() string { return n.cfg.LabID }

// AllocateIPs hands out the next free address pair: the same host offset in both CIDRs
// (10.77.1.5 and fd77:0:0:1::5), starting at offset 2. Addresses come back when their pod is detached.
func (n *Node) AllocateIPs() (v4, v6 netip.Addr, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return v4, v6, fmt.Errorf("podnet: node %s is closed", n.cfg.Name)
	}
	var off uint64
	if len(n.freed) > 0 {
		off, n.freed = n.freed[0], n.freed[1:]
	} else {
		off = n.nextHost
		if !n.offsetFits(off) {
			return v4, v6, fmt.Errorf("podnet: node %s has no free pod address left in %s / %s", n.cfg.Name, n.cfg.PodCIDRv4, n.cfg.PodCIDRv6)
		}
		n.nextHost++
	}
	n.used[off] = true
	if n.cfg.PodCIDRv4.IsValid() {
		v4 = addOffset(n.cfg.PodCIDRv4.Addr(), off)
	}
	if n.cfg.PodCIDRv6.IsValid() {
		v6 = addOffset(n.cfg.PodCIDRv6.Addr(), off)
	}
	return v4, v6, nil
}

// offsetFits keeps the offset below the broadcast address of the smaller prefix.
func (n *Node) offsetFits(off uint64) bool {
	for _, p := range []netip.Prefix{n.cfg.PodCIDRv4, n.cfg.PodCIDRv6} {
		if !p.IsValid() {
			continue
		}
		hostBits := p.Addr().BitLen() - p.Bits()
		if hostBits < 64 && off >= (uint64(1)<<hostBits)-1 {
			return false
		}
	}
	return true
}

func addOffset(a netip.Addr, off uint64) netip.Addr {
	b := a.AsSlice()
	carry := off
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		s := uint64(b[i]) + carry&0xff
		b[i] = byte(s)
		carry = carry>>8 + s>>8
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}

// offsetOf is the inverse of addOffset within prefix p (ok=false when a is outside p).
func offsetOf(p netip.Prefix, a netip.Addr) (uint64, bool) {
	if !p.IsValid() || !a.IsValid() || !p.Contains(a) {
		return 0, false
	}
	base, x := p.Addr().AsSlice(), a.AsSlice()
	var off uint64
	for i := len(x) - 8; i < len(x); i++ {
		if i < 0 {
			continue
		}
		off = off<<8 | uint64(x[i]-base[i])
	}
	return off, true
}

func (n *Node) releaseIPs(p *Pod) {
	for _, pair := range []struct {
		pre netip.Prefix
		a   netip.Addr
	}{{n.cfg.PodCIDRv4, p.IPv4}, {n.cfg.PodCIDRv6, p.IPv6}} {
		if off, ok := offsetOf(pair.pre, pair.a); ok && n.used[off] {
			delete(n.used, off)
			n.freed = append(n.freed, off)
			return
		}
	}
}

// Pods lists the node's attached pods by namespace/name.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Close removes every pod and the node's cgroup subtree.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	pods := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		pods = append(pods, p)
	}
	n.pods = map[types.UID]*Pod{}
	n.mu.Unlock()

	var errs []error
	for _, p := range pods {
		if err := p.teardown(); err != nil {
			errs = append(errs, err)
		}
	}
	var st nodeState
	st.CgroupParent = n.cfg.CgroupParent
	if b, err := os.ReadFile(n.stateFile); err == nil {
		_ = jsonUnmarshal(b, &st)
	}
	if err := removeNodeCgroups(st); err != nil {
		errs = append(errs, err)
	}
	removeEgressRules(st.PodCIDRs)
	if len(errs) == 0 {
		_ = os.Remove(n.stateFile)
	}
	nodeRegistry.Lock()
	delete(nodeRegistry.byLab[n.cfg.LabID], n.cfg.Name)
	if len(nodeRegistry.byLab[n.cfg.LabID]) == 0 {
		delete(nodeRegistry.byLab, n.cfg.LabID)
		if len(errs) == 0 {
			releaseLabIfEmpty(n.cfg.LabID)
		}
	}
	nodeRegistry.Unlock()
	return errors.Join(errs...)
}

// enableForwarding lets the root namespace route between pod veths (pods on any lab node).
func enableForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 && b[0] == '1' {
			continue
		}
		if err := os.WriteFile(f, []byte("1"), 0); err != nil {
			return fmt.Errorf("enabling forwarding (%s): %w", f, err)
		}
	}
	return nil
}

// Policy-routing priorities of the egress rules (below the main table's 32766).
const (
	egressLookupPriority = 30100
	egressDropPriority   = 30101
)

// egressRules keep pod traffic on the host: packets from a pod CIDR use the main table without
// its default routes, and whatever only a default route would carry is unreachable. Pods reach
// other pods, ClusterIPs and host addresses, and nothing leaves the machine (a pod process that
// reads the host's resolv.conf fails at once instead of querying the outside resolver).
func egressRules(cidr string) []*netlink.Rule {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	lookup := netlink.NewRule()
	lookup.Priority, lookup.Family, lookup.Src = egressLookupPriority, family, prefixNet(p)
	lookup.Table, lookup.SuppressPrefixlen = unix.RT_TABLE_MAIN, 0
	drop := netlink.NewRule()
	drop.Priority, drop.Family, drop.Src = egressDropPriority, family, prefixNet(p)
	drop.Type = unix.RTN_UNREACHABLE
	return []*netlink.Rule{lookup, drop}
}

func addEgressRules(cidrs []string) error {
	for _, c := range cidrs {
		for _, r := range egressRules(c) {
			if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("adding egress rule for %s: %w", c, err)
			}
		}
	}
	return nil
}

func removeEgressRules(cidrs []string) {
	for _, c := range cidrs {
		for _, r := range egressRules(c) {
			_ = netlink.RuleDel(r)
		}
	}
}
