//go:build linux

package realnode

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// StateFile records what a real node changed on this host, written before each change, so the
// next Start (or SweepStale) undoes a crashed run. The kubelet and containerd hard-code host
// paths (/run/containerd, /var/lib/kubelet/device-plugins, /kubepods cgroups), so only one
// real node runs per host.
const StateFile = "/run/isoobs-realnode.json"

// state is everything teardown needs, also in a process that did not start the node.
type state struct {
	Owner      int    `json:"owner_pid"`
	OwnerStart uint64 `json:"owner_start"` // /proc/<pid>/stat start time: a reused pid is not the owner
	Dir        string `json:"dir"`
	Socket     string `json:"containerd_socket"`
	Bridge     string `json:"bridge,omitempty"`
	Subnet     string `json:"subnet,omitempty"`
	// DNAT is the nat PREROUTING rule (iptables arguments after -A/-D PREROUTING).
	DNAT []string `json:"dnat,omitempty"`
	// Chains are the KUBE-* chains ("iptables filter KUBE-FIREWALL") present before the kubelet ran.
	ChainsBefore []string `json:"chains_before"`
	NetnsBefore  []string `json:"netns_before"`
	// Sysctls are /proc/sys paths and their values before (the bridge plugin sets ip_forward, the
	// kubelet kernel.panic, kernel.panic_on_oops, vm.overcommit_memory ...).
	Sysctls map[string]string `json:"sysctls"`
	// Created are host paths that did not exist before: removed on teardown.
	Created []string `json:"created"`
	// EgressRules: policy rules for the pod subnet were added.
	EgressRules bool `json:"egress_rules,omitempty"`
}

// sysctls the kubelet (setupKernelTunables), the bridge plugin or we change.
var watchedSysctls = []string{
	"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Host paths the kubelet, containerd, libcni or the isoobs chart's DirectoryOrCreate hostPaths
// create outside the node's own directory.
var watchedPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
	"/etc/kubernetes", "/run/isoobs", "/run/cilium", "/var/run/cilium",
}

func processStart(pid int) (uint64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

func (s *state) ownerAlive() bool {
	st, ok := processStart(s.Owner)
	return ok && st == s.OwnerStart
}

func (s *state) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := StateFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, StateFile)
}

func readState() (*state, error) {
	data, err := os.ReadFile(StateFile)
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile, err)
	}
	return &s, nil
}

// SweepStale undoes what a real node of a dead process left on the host (no-op when there is
// none). It returns an error if a live process runs a real node.
func SweepStale(logf func(string, ...any)) error {
	s, err := readState()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		logf("realnode: unreadable %s, removing it: %v", StateFile, err)
		return os.Remove(StateFile)
	}
	if s.ownerAlive() {
		if s.Owner == os.Getpid() {
			return fmt.Errorf("this process already runs a real node (dir %s)", s.Dir)
		}
		return fmt.Errorf("process %d runs a real node (dir %s); only one runs per host (the kubelet hard-codes host paths)", s.Owner, s.Dir)
	}
	logf("realnode: cleaning up after dead process %d (dir %s)", s.Owner, s.Dir)
	return s.teardown(logf)
}

// recordBefore fills what teardown compares against; called before anything is changed.
func (s *state) recordBefore() error {
	s.Sysctls = map[string]string{}
	for _, k := range watchedSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	seen := map[string]bool{}
	for _, p := range watchedPaths {
		r := p
		if ev, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
			r = filepath.Join(ev, filepath.Base(p))
		}
		if seen[r] {
			continue
		}
		seen[r] = true
		if _, err := os.Lstat(r); errors.Is(err, os.ErrNotExist) {
			s.Created = append(s.Created, r)
		}
	}
	chains, err := kubeChains()
	if err != nil {
		return err
	}
	s.ChainsBefore = chains
	s.NetnsBefore = cniNetns()
	return nil
}

// kubeChains lists "iptables|ip6tables table KUBE-..." chains.
func kubeChains() ([]string, error) {
	var out []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, t := range []string{"filter", "nat", "mangle"} {
			b, err := exec.Command(bin+"-save", "-t", t).Output()
			if err != nil {
				continue // table or family not available
			}
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				l := sc.Text()
				if strings.HasPrefix(l, ":KUBE-") {
					out = append(out, bin+" "+t+" "+strings.Fields(l[1:])[0])
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func cniNetns() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "cni-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// teardown undoes everything s records, in an order that works whether the node's processes
// are running, stopped or killed.
func (s *state) teardown(logf func(string, ...any)) error {
	var errs []error
	// The kubelet and containerd first (nothing restarts pods), then pod processes (so nothing
	// holds netns, mounts or cgroups), then the shims.
	killMatching(func(cmd string) bool {
		return (strings.Contains(cmd, "kubelet\x00") || strings.Contains(cmd, "containerd\x00")) && strings.Contains(cmd, s.Dir)
	})
	killKubepods()
	killMatching(func(cmd string) bool {
		return strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, s.Socket)
	})
	// Mounts: container rootfs, shm, projected volumes under Dir (and in Created paths, below).
	unmountUnder(s.Dir)
	before := map[string]bool{}
	for _, n := range s.NetnsBefore {
		before[n] = true
	}
	for _, n := range cniNetns() {
		if !before[n] {
			p := filepath.Join("/run/netns", n)
			_ = unix.Unmount(p, unix.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.Bridge != "" {
		if l, err := netlink.LinkByName(s.Bridge); err == nil {
			// veths of pods whose netns is gone went with it; any left are the bridge's ports.
			if links, err := netlink.LinkList(); err == nil {
				for _, p := range links {
					if p.Attrs().MasterIndex == l.Attrs().Index {
						_ = netlink.LinkDel(p)
					}
				}
			}
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete bridge %s: %w", s.Bridge, err))
			}
		}
	}
	if len(s.DNAT) > 0 {
		args := append([]string{"-w", "-t", "nat", "-D", "PREROUTING"}, s.DNAT...)
		for exec.Command("iptables", args...).Run() == nil { // also duplicates of a crashed retry
		}
	}
	if s.EgressRules {
		removeEgressRules(s.Subnet)
	}
	errs = append(errs, s.dropNewChains())
	for k, v := range s.Sysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0); err != nil {
				errs = append(errs, fmt.Errorf("restore %s=%s: %w", k, v, err))
			}
		}
	}
	if err := removeKubepodsCgroups(); err != nil {
		errs = append(errs, err)
	}
	// libcni's result cache when /var/lib/cni existed before.
	for _, pat := range []string{"/var/lib/cni/results/" + networkName + "-*", "/var/lib/cni/results/cni-loopback-*"} {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			_ = os.Remove(f)
		}
	}
	for i := len(s.Created) - 1; i >= 0; i-- {
		p := s.Created[i]
		unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, sub := range []string{"containerd", "kubelet", "cni"} {
		d := filepath.Join(s.Dir, sub)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		logf("realnode teardown: %v", err)
		return err
	}
	return os.Remove(StateFile)
}

// dropNewChains deletes the KUBE-* chains that were not there before, with the rules jumping
// to them.
func (s *state) dropNewChains() error {
	before := map[string]bool{}
	for _, c := range s.ChainsBefore {
		before[c] = true
	}
	now, _ := kubeChains()
	var errs []error
	var drop []string
	for _, c := range now {
		if !before[c] {
			drop = append(drop, c)
		}
	}
	for _, c := range drop { // flush first: new chains may jump to each other
		f := strings.Fields(c)
		_ = exec.Command(f[0], "-w", "-t", f[1], "-F", f[2]).Run()
	}
	for _, c := range drop {
		f := strings.Fields(c)
		bin, table, chain := f[0], f[1], f[2]
		rules, _ := exec.Command(bin, "-w", "-t", table, "-S").Output()
		sc := bufio.NewScanner(bytes.NewReader(rules))
		for sc.Scan() {
			l := sc.Text()
			if !strings.HasPrefix(l, "-A ") || !(strings.HasSuffix(l, "-j "+chain) || strings.Contains(l, "-j "+chain+" ")) {
				continue
			}
			args, err := splitRule(strings.TrimPrefix(l, "-A "))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if out, err := exec.Command(bin, append([]string{"-w", "-t", table, "-D"}, args...)...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s -D %s: %v: %s", bin, table, l, err, out))
			}
		}
		if out, err := exec.Command(bin, "-w", "-t", table, "-X", chain).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s -X %s: %v: %s", bin, table, chain, err, out))
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables -S rule into arguments, honouring double quotes (comments).
func splitRule(l string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '"':
			inQ, have = !inQ, true
		case c == '\\' && inQ && i+1 < len(l):
			i++
			cur.WriteByte(l[i])
		case c == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if inQ {
		return nil, fmt.Errorf("unbalanced quotes in %q", l)
	}
	if have {
		out = append(out, cur.String())
	}
	return out, nil
}

// cgroupRoots are the cgroup v2 mount and every v1 hierarchy (hybrid hosts have both).
func cgroupRoots() []string {
	var out []string
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 {
			continue
		}
		i := 6
		for i < len(f) && f[i] != "-" {
			i++
		}
		if i+1 < len(f) && (f[i+1] == "cgroup2" || f[i+1] == "cgroup") {
			out = append(out, f[4])
		}
	}
	return out
}

// killKubepods kills every process in the kubelet's /kubepods cgroups (pods and their pause).
func killKubepods() {
	for i := 0; i < 50; i++ {
		left := 0
		for _, root := range cgroupRoots() {
			kp := filepath.Join(root, "kubepods")
			if _, err := os.Stat(kp); err != nil {
				continue
			}
			_ = os.WriteFile(filepath.Join(kp, "cgroup.kill"), []byte("1"), 0) // v2, kernel >= 5.14
			_ = filepath.WalkDir(kp, func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						left++
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if left == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func removeKubepodsCgroups() error {
	var errs []error
	for _, root := range cgroupRoots() {
		kp := filepath.Join(root, "kubepods")
		if _, err := os.Stat(kp); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(kp, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 20; try++ { // EBUSY while the last processes are reaped
				if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// killMatching SIGKILLs processes whose NUL-separated command line matches, and waits for them.
func killMatching(match func(cmdline string) bool) {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(string(b)) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		for i := 0; i < 50; i++ {
			if _, ok := processStart(pid); !ok {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	dir = filepath.Clean(dir)
	for try := 0; try < 3; try++ {
		data, _ := os.ReadFile("/proc/self/mountinfo")
		var ms []string
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 {
				continue
			}
			mp := unescape(f[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				ms = append(ms, mp)
			}
		}
		if len(ms) == 0 {
			return
		}
		for i := len(ms) - 1; i >= 0; i-- {
			_ = unix.Unmount(ms[i], unix.MNT_DETACH)
		}
	}
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Egress rules keep pod traffic on the host, as the lab's other nodes do (podnet): packets from
// the pod subnet use the main table without its default route.
const (
	egressLookupPriority = 30110
	egressDropPriority   = 30111
)

func egressRules(subnet string) []*netlink.Rule {
	_, n, err := net.ParseCIDR(subnet)
	if err != nil {
		return nil
	}
	lookup := netlink.NewRule()
	lookup.Priority, lookup.Family, lookup.Src = egressLookupPriority, netlink.FAMILY_V4, n
	lookup.Table, lookup.SuppressPrefixlen = unix.RT_TABLE_MAIN, 0
	drop := netlink.NewRule()
	drop.Priority, drop.Family, drop.Src = egressDropPriority, netlink.FAMILY_V4, n
	drop.Type = unix.RTN_UNREACHABLE
	return []*netlink.Rule{lookup, drop}
}

func addEgressRules(subnet string) error {
	for _, r := range egressRules(subnet) {
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("egress rule for %s: %w", subnet, err)
		}
	}
	return nil
}

func removeEgressRules(subnet string) {
	for _, r := range egressRules(subnet) {
		_ = netlink.RuleDel(r)
	}
}
