package podnet

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// CgroupV2Mount finds the cgroup v2 mount (here /sys/fs/cgroup/unified, on most nodes /sys/fs/cgroup).
func CgroupV2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// mountinfo: ID parent major:minor root mountpoint options [optional...] - fstype source superopts
		line := sc.Text()
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		pre, post := strings.Fields(line[:sep]), strings.Fields(line[sep+3:])
		if len(pre) < 5 || len(post) < 1 || post[0] != "cgroup2" {
			continue
		}
		found = append(found, unescapeMountPath(pre[4]))
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading mount table: %w", err)
	}
	if len(found) == 0 {
		return "", errors.New("no cgroup v2 filesystem is mounted; mount one with: mount -t cgroup2 none /sys/fs/cgroup/unified")
	}
	// Prefer the canonical locations; a pure v2 host mounts it at /sys/fs/cgroup.
	for _, want := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		for _, m := range found {
			if m == want {
				return m, nil
			}
		}
	}
	return found[0], nil
}

// unescapeMountPath undoes the octal escapes (\040 for space, ...) that mountinfo uses.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isCgroup2Dir reports whether dir lies on a cgroup v2 filesystem.
func isCgroup2Dir(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// QOSClassOf returns the pod's QoS class: status.qosClass when the caller set it, otherwise
// derived from the containers' requests and limits with the kubelet's rules.
func QOSClassOf(pod *corev1.Pod) corev1.PodQOSClass {
	if pod.Status.QOSClass != "" {
		return pod.Status.QOSClass
	}
	containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	any, guaranteed := false, len(containers) > 0
	for _, c := range containers {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[res]
			if !ok || lim.IsZero() {
				guaranteed = false
				continue
			}
			if req, ok := c.Resources.Requests[res]; ok && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	default:
		return corev1.PodQOSBurstable
	}
}

// podCgroupRel is the pod cgroup below the node's cgroup root, named exactly as the kubelet names it.
func podCgroupRel(driver string, qos corev1.PodQOSClass, uid types.UID) string {
	level := strings.ToLower(string(qos)) // "burstable", "besteffort"; guaranteed pods have no level
	if qos == corev1.PodQOSGuaranteed {
		level = ""
	}
	if driver == DriverSystemd {
		u := strings.ReplaceAll(string(uid), "-", "_")
		if level == "" {
			return filepath.Join("kubepods.slice", "kubepods-pod"+u+".slice")
		}
		return filepath.Join("kubepods.slice", "kubepods-"+level+".slice", "kubepods-"+level+"-pod"+u+".slice")
	}
	if level == "" {
		return filepath.Join("kubepods", "pod"+string(uid))
	}
	return filepath.Join("kubepods", level, "pod"+string(uid))
}

// containerCgroupName is a container's directory inside its pod cgroup, as containerd names it.
func containerCgroupName(driver, containerID string) string {
	if driver == DriverSystemd {
		return "cri-containerd-" + containerID + ".scope"
	}
	return containerID
}

// mkdirCgroups creates dir and its missing parents, returning the ones it created (outermost first).
func mkdirCgroups(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !os.IsNotExist(err) {
			return nil, err
		}
		missing = append(missing, d)
		if d == "/" {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !os.IsExist(err) {
			return created, fmt.Errorf("creating cgroup %s: %w", missing[i], err)
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// RemoveCgroupTree kills every process in the subtree at dir and removes its directories bottom-up,
// waiting up to 5 s for killed processes to be reaped.
// A missing dir is not an error.
func RemoveCgroupTree(dir string) error {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	}
	// cgroup.kill (Linux 5.14+) SIGKILLs the whole subtree atomically, including forks in flight.
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil && !os.IsNotExist(err) {
		killProcsIn(dir)
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// Deepest first so children go before parents.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	deadline := time.Now().Add(5 * time.Second)
	var lastErr error
	for _, d := range dirs {
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				lastErr = nil
				break
			}
			lastErr = fmt.Errorf("removing cgroup %s: %w", d, err)
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				break
			}
			// Killed processes leave the cgroup only once they are reaped.
			killProcsIn(d)
			time.Sleep(5 * time.Millisecond)
		}
		if lastErr != nil {
			return lastErr
		}
	}
	return nil
}

// killProcsIn SIGKILLs the processes listed in dir/cgroup.procs (fallback for kernels without cgroup.kill).
func killProcsIn(dir string) {
	for _, pid := range cgroupProcs(dir) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupInode is the cgroup id the kernel reports (bpf_get_current_cgroup_id, bpf_skb_cgroup_id).
func cgroupInode(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", dir, err)
	}
	return st.Ino, nil
}
