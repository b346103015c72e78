package podnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// StateRoot holds one directory per running lab: who owns it and what it created, so that a
// later SweepStale can remove what a killed lab left behind. A variable so tests can move it.
var StateRoot = "/run/isoobs-lab"

// owner identifies a process across PID reuse: the PID plus its start time in clock ticks.
type owner struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func (o owner) alive() bool {
	st, err := processStartTime(o.PID)
	return err == nil && st == o.Start
}

// processStartTime reads field 22 of /proc/<pid>/stat.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func selfOwner() (owner, error) {
	st, err := processStartTime(os.Getpid())
	if err != nil {
		return owner{}, fmt.Errorf("reading own start time: %w", err)
	}
	return owner{PID: os.Getpid(), Start: st}, nil
}

// nodeState and podState are what SweepStale needs to undo a node and a pod.
type nodeState struct {
	Name         string   `json:"name"`
	CgroupParent string   `json:"cgroupParent"`
	CreatedDirs  []string `json:"createdDirs"` // cgroup dirs NewNode created, outermost first
	PodCIDRs     []string `json:"podCIDRs"`    // keys of the egress rules
}

type podState struct {
	UID        string `json:"uid"`
	Node       string `json:"node"`
	HostVeth   string `json:"hostVeth"`
	CgroupPath string `json:"cgroupPath"`
	Pause      owner  `json:"pause"`
}

func labDir(labID string) string { return filepath.Join(StateRoot, labID) }

// claimLab records this process as the lab's owner. Another live owner is an error; a dead one's
// leftovers are swept first.
func claimLab(labID string) error {
	me, err := selfOwner()
	if err != nil {
		return err
	}
	dir := labDir(labID)
	if o, err := readOwner(dir); err == nil {
		if o == me {
			return nil
		}
		if o.alive() {
			return fmt.Errorf("lab id %q is in use by running process %d; pick another LabID or stop that lab (isoobs-lab down)", labID, o.PID)
		}
		if err := sweepLab(dir); err != nil {
			return fmt.Errorf("removing leftovers of dead lab %q: %w", labID, err)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "nodes"), filepath.Join(dir, "pods")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating lab state dir: %w", err)
		}
	}
	return writeJSON(filepath.Join(dir, "owner.json"), me)
}

func readOwner(dir string) (owner, error) {
	var o owner
	b, err := os.ReadFile(filepath.Join(dir, "owner.json"))
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(b, &o)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// releaseLabIfEmpty removes the lab's state dir once no node of it is left.
func releaseLabIfEmpty(labID string) {
	dir := labDir(labID)
	if ents, err := os.ReadDir(filepath.Join(dir, "nodes")); err == nil && len(ents) == 0 {
		_ = os.RemoveAll(dir)
		_ = os.Remove(StateRoot) // only succeeds when no other lab is running
	}
}

// SweepStale removes leftovers (netns, veth, cgroup dirs, processes) of labs whose owner process is dead. Called at lab start and by `isoobs-lab down`.
func SweepStale() error {
	ents, err := os.ReadDir(StateRoot)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", StateRoot, err)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(StateRoot, e.Name())
		if o, err := readOwner(dir); err == nil && o.alive() {
			continue
		}
		if err := sweepLab(dir); err != nil {
			errs = append(errs, fmt.Errorf("lab %s: %w", e.Name(), err))
		}
	}
	_ = os.Remove(StateRoot)
	return errors.Join(errs...)
}

// sweepLab undoes everything recorded under a dead lab's state dir, then the dir itself.
func sweepLab(dir string) error {
	labID := filepath.Base(dir)
	var errs []error
	pods, _ := os.ReadDir(filepath.Join(dir, "pods"))
	for _, e := range pods {
		var ps podState
		if b, err := os.ReadFile(filepath.Join(dir, "pods", e.Name())); err != nil || json.Unmarshal(b, &ps) != nil {
			continue
		}
		if ps.Pause.PID > 0 && ps.Pause.alive() {
			_ = unix.Kill(ps.Pause.PID, unix.SIGKILL)
		}
		if ps.HostVeth != "" {
			if l, err := netlink.LinkByName(ps.HostVeth); err == nil {
				_ = netlink.LinkDel(l)
			}
		}
		if ps.CgroupPath != "" {
			if err := RemoveCgroupTree(ps.CgroupPath); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Host veths are named "<labid>-<hash>": catch any whose pod record was never written.
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, labID+"-") {
				_ = netlink.LinkDel(l)
			}
		}
	}
	nodes, _ := os.ReadDir(filepath.Join(dir, "nodes"))
	for _, e := range nodes {
		var ns nodeState
		if b, err := os.ReadFile(filepath.Join(dir, "nodes", e.Name())); err != nil || json.Unmarshal(b, &ns) != nil {
			continue
		}
		if err := removeNodeCgroups(ns); err != nil {
			errs = append(errs, err)
		}
		removeEgressRules(ns.PodCIDRs)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeNodeCgroups removes the node's kubepods subtrees and the parent dirs NewNode created.
func removeNodeCgroups(ns nodeState) error {
	var errs []error
	for _, sub := range []string{"kubepods.slice", "kubepods"} {
		if err := RemoveCgroupTree(filepath.Join(ns.CgroupParent, sub)); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(ns.CreatedDirs) - 1; i >= 0; i-- {
		d := ns.CreatedDirs[i]
		if i == len(ns.CreatedDirs)-1 {
			// The node root itself: whatever else is below it belongs to this node.
			if err := RemoveCgroupTree(d); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		// Shared parents (e.g. isoobs-<labid>) go only once the last node has left them.
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
