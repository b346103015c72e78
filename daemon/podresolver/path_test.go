package podresolver

import (
	"strings"
	"testing"
)

func TestParsePodCgroup(t *testing.T) {
	const uid = "8f2a1c3e-5b7d-4e9f-a1b2-c3d4e5f60718"
	const uidU = "8f2a1c3e_5b7d_4e9f_a1b2_c3d4e5f60718"
	tests := []struct {
		name    string
		path    string
		ok      bool
		podPath string
		qos     string
		driver  string
	}{
		{"systemd burstable pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice",
			true, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice", "burstable", "systemd"},
		{"systemd besteffort container", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-0123abcd.scope",
			true, "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice", "besteffort", "systemd"},
		{"systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-deadbeef.scope",
			true, "/kubepods.slice/kubepods-pod" + uidU + ".slice", "guaranteed", "systemd"},
		{"systemd nested cgroup in container", "/kubepods.slice/kubepods-pod" + uidU + ".slice/docker-1.scope/init/inner",
			true, "/kubepods.slice/kubepods-pod" + uidU + ".slice", "guaranteed", "systemd"},
		{"systemd with kubelet cgroup root (kind)", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-1.scope",
			true, "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice", "besteffort", "systemd"},
		{"systemd uid with dashes", "/kubepods.slice/kubepods-pod" + uid + ".slice",
			true, "/kubepods.slice/kubepods-pod" + uid + ".slice", "guaranteed", "systemd"},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/0123456789abcdef",
			true, "/kubepods/pod" + uid, "guaranteed", "cgroupfs"},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid,
			true, "/kubepods/burstable/pod" + uid, "burstable", "cgroupfs"},
		{"cgroupfs besteffort container, relative", "kubepods/besteffort/pod" + strings.ToUpper(uid) + "/abc",
			true, "kubepods/besteffort/pod" + strings.ToUpper(uid), "besteffort", "cgroupfs"},
		{"cgroupfs under a prefix", "/isoobs-test/kubepods/burstable/pod" + uid + "/c1",
			true, "/isoobs-test/kubepods/burstable/pod" + uid, "burstable", "cgroupfs"},
		{"host service", "/system.slice/sshd.service", false, "", "", ""},
		{"qos slice only", "/kubepods.slice/kubepods-burstable.slice", false, "", "", ""},
		{"kubepods root", "/kubepods", false, "", "", ""},
		{"pod-looking dir outside kubepods", "/user.slice/pod" + uid, false, "", "", ""},
		{"systemd pod slice at wrong parent", "/system.slice/kubepods-pod" + uidU + ".slice", false, "", "", ""},
		{"cgroupfs pod under unknown qos", "/kubepods/silver/pod" + uid, false, "", "", ""},
		{"bad uid", "/kubepods/podnot-a-uid", false, "", "", ""},
		{"root", "/", false, "", "", ""},
		{"empty", "", false, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParsePodCgroup(tt.path)
			if ok != tt.ok {
				t.Fatalf("ParsePodCgroup(%q) ok=%v, want %v (%+v)", tt.path, ok, tt.ok, got)
			}
			if !ok {
				return
			}
			if got.UID != uid || got.PodPath != tt.podPath || got.QoS != tt.qos || got.Driver != tt.driver {
				t.Fatalf("ParsePodCgroup(%q) = %+v, want uid %s podPath %s qos %s driver %s", tt.path, got, uid, tt.podPath, tt.qos, tt.driver)
			}
		})
	}
}

func FuzzParsePodCgroup(f *testing.F) {
	f.Add("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8f2a1c3e_5b7d_4e9f_a1b2_c3d4e5f60718.slice/cri-containerd-1.scope")
	f.Add("/kubepods/besteffort/pod8f2a1c3e-5b7d-4e9f-a1b2-c3d4e5f60718/abc")
	f.Add("/system.slice/kubepods-pod8f2a1c3e_5b7d_4e9f_a1b2_c3d4e5f60718.slice")
	f.Add("//kubepods//pod")
	f.Fuzz(func(t *testing.T, path string) {
		got, ok := ParsePodCgroup(path)
		if !ok {
			if got != (PodCgroup{}) {
				t.Fatalf("not ok but non-zero result %+v", got)
			}
			return
		}
		// Invariants: the pod path is a prefix of the input, ends in the component that names
		// the UID, and the UID is canonical.
		if !strings.HasPrefix(path, got.PodPath) {
			t.Fatalf("pod path %q is not a prefix of %q", got.PodPath, path)
		}
		if rest := path[len(got.PodPath):]; rest != "" && rest[0] != '/' {
			t.Fatalf("pod path %q cuts a component of %q", got.PodPath, path)
		}
		if len(got.UID) != 36 || strings.ToLower(got.UID) != got.UID || strings.Contains(got.UID, "_") {
			t.Fatalf("uid %q not canonical", got.UID)
		}
		last := got.PodPath[strings.LastIndex(got.PodPath, "/")+1:]
		if !strings.Contains(canonicalUID(last), got.UID) {
			t.Fatalf("last component %q does not carry uid %q", last, got.UID)
		}
		// Re-parsing the pod path gives the same answer.
		again, ok := ParsePodCgroup(got.PodPath)
		if !ok || again != got {
			t.Fatalf("reparse of %q = %+v %v, want %+v", got.PodPath, again, ok, got)
		}
	})
}
