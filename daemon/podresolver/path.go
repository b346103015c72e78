// Package podresolver maps cgroup ids seen by the eBPF probes to cgroup paths and to the pod
// UIDs the kubelet encodes in those paths.
package podresolver

import (
	"regexp"
	"strings"
)

// PodCgroup is what a cgroup path says about the pod it belongs to.
type PodCgroup struct {
	// UID is the pod UID in its canonical form (dashes, lower case).
	UID string
	// PodPath is the pod-level cgroup path (the input path cut after the pod component).
	PodPath string
	// QoS is "guaranteed", "burstable" or "besteffort" when the path says so.
	QoS string
	// Driver is "systemd" or "cgroupfs".
	Driver string
}

// uidPattern is a Kubernetes pod UID (an RFC 4122 UUID as the API server generates it).
const uidPattern = `[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}`

var (
	// systemd driver: kubepods-pod<uid>.slice (guaranteed) or kubepods-<qos>-pod<uid>.slice,
	// with dashes in the UID written as underscores (systemd treats '-' as hierarchy). A prefix
	// such as "kubelet-" appears when the kubelet runs with --cgroup-root (kind, nested setups).
	systemdPodRe = regexp.MustCompile(`^(?:[A-Za-z0-9_]+-)*kubepods(?:-(burstable|besteffort|guaranteed))?-pod(` + uidPattern + `)\.slice$`)
	// cgroupfs driver: .../kubepods/[burstable|besteffort/]pod<uid>.
	cgroupfsPodRe = regexp.MustCompile(`^pod(` + uidPattern + `)$`)
	qosDirs       = map[string]bool{"burstable": true, "besteffort": true}
)

// ParsePodCgroup finds the pod a cgroup path belongs to. The path may be the pod-level cgroup
// or any cgroup below it (container scopes, nested cgroups a container created). Paths not under
// a kubepods hierarchy are never attributed to a pod (ok=false), whatever their names look like.
func ParsePodCgroup(path string) (PodCgroup, bool) {
	parts := strings.Split(path, "/")
	// The pod component is the outermost match: kubelet never nests pods, and a container that
	// names its own sub-cgroups "pod..." must not shadow the real pod.
	for i, part := range parts {
		if m := systemdPodRe.FindStringSubmatch(part); m != nil {
			if !underSystemdKubepods(parts[:i], part) {
				continue
			}
			qos := m[1]
			if qos == "" {
				qos = "guaranteed"
			}
			return PodCgroup{UID: canonicalUID(m[2]), PodPath: strings.Join(parts[:i+1], "/"), QoS: qos, Driver: "systemd"}, true
		}
		if m := cgroupfsPodRe.FindStringSubmatch(part); m != nil {
			qos, ok := underCgroupfsKubepods(parts[:i])
			if !ok {
				continue
			}
			return PodCgroup{UID: canonicalUID(m[1]), PodPath: strings.Join(parts[:i+1], "/"), QoS: qos, Driver: "cgroupfs"}, true
		}
	}
	return PodCgroup{}, false
}

// containerIDRe is a container ID as CRI runtimes write it (64 hex digits).
var containerIDRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ContainerID is the container ID in a container cgroup's path below the pod's (systemd:
// cri-containerd-<id>.scope, crio-<id>.scope, docker-<id>.scope; cgroupfs: <id>), or "" for
// the pod's own cgroup and anything else.
func ContainerID(path string, pc PodCgroup) string {
	rest, ok := strings.CutPrefix(path, pc.PodPath+"/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	id := strings.TrimSuffix(first, ".scope")
	for _, prefix := range []string{"cri-containerd-", "crio-", "docker-"} {
		id = strings.TrimPrefix(id, prefix)
	}
	if !containerIDRe.MatchString(id) {
		return ""
	}
	return id
}

// underSystemdKubepods checks that the slice is nested where systemd puts it: every systemd
// slice name repeats its parents' names, so the parent must be the same name minus the last
// "-pod..." (or "-<qos>") segment. That keeps a stray "kubepods-pod<uid>.slice" under some host
// service from being taken for a pod.
func underSystemdKubepods(parents []string, slice string) bool {
	if len(parents) == 0 {
		return false
	}
	parent := parents[len(parents)-1]
	name := strings.TrimSuffix(slice, ".slice")
	cut := strings.LastIndex(name, "-pod")
	if cut < 0 {
		return false
	}
	return parent == name[:cut]+".slice"
}

// underCgroupfsKubepods checks that the pod directory sits right under "kubepods" or
// "kubepods/<qos>", and returns the QoS class that implies.
func underCgroupfsKubepods(parents []string) (string, bool) {
	n := len(parents)
	if n >= 1 && parents[n-1] == "kubepods" {
		return "guaranteed", true
	}
	if n >= 2 && parents[n-2] == "kubepods" && qosDirs[parents[n-1]] {
		return parents[n-1], true
	}
	return "", false
}

func canonicalUID(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}
