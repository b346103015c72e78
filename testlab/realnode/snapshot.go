//go:build linux

package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// Snapshot is the host state a real node touches (for leak checks in tests): KUBE-* chains,
// cni-* netns, isorn* links, kubepods cgroups, watched host paths and sysctls, the state file
// and kubelet/containerd-shim processes.
type Snapshot map[string]string

// TakeSnapshot records the host state a real node touches.
func TakeSnapshot() Snapshot {
	s := Snapshot{}
	chains, _ := kubeChains()
	for _, c := range chains {
		s["chain "+c] = "present"
	}
	for _, n := range cniNetns() {
		s["netns "+n] = "present"
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "isorn") {
				s["link "+l.Attrs().Name] = "present"
			}
		}
	}
	for _, root := range cgroupRoots() {
		if _, err := os.Stat(filepath.Join(root, "kubepods")); err == nil {
			s["cgroup "+root+"/kubepods"] = "present"
		}
	}
	for _, p := range append(watchedPaths, StateFile, "/var/lib/kubelet/device-plugins") {
		if _, err := os.Lstat(p); err == nil {
			s["path "+p] = "present"
		}
	}
	for _, k := range watchedSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s["sysctl "+k] = strings.TrimSpace(string(b))
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		arg0 := filepath.Base(strings.SplitN(string(b), "\x00", 2)[0])
		if arg0 == "kubelet" || strings.HasPrefix(arg0, "containerd-shim") {
			s["process "+e.Name()] = strings.ReplaceAll(string(b), "\x00", " ")
		}
	}
	return s
}

// Diff lists what differs from before to s, one line each.
func (s Snapshot) Diff(before Snapshot) []string {
	var out []string
	for k, v := range s {
		if b, ok := before[k]; !ok {
			out = append(out, fmt.Sprintf("new %s: %s", k, v))
		} else if b != v {
			out = append(out, fmt.Sprintf("changed %s: %s -> %s", k, b, v))
		}
	}
	for k, v := range before {
		if _, ok := s[k]; !ok {
			out = append(out, fmt.Sprintf("gone %s (was %s)", k, v))
		}
	}
	sort.Strings(out)
	return out
}
