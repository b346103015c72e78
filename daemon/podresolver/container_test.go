package podresolver

import (
	"strings"
	"testing"
)

func TestContainerID(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct{ path, want string }{
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12345678_1234_1234_1234_123456789012.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods.slice/kubepods-pod12345678_1234_1234_1234_123456789012.slice/crio-" + id + ".scope", id},
		{"/kubepods/burstable/pod12345678-1234-1234-1234-123456789012/" + id, id},
		{"/kubepods/burstable/pod12345678-1234-1234-1234-123456789012/" + id + "/nested", id},
		{"/kubepods/burstable/pod12345678-1234-1234-1234-123456789012", ""},
		{"/kubepods/burstable/pod12345678-1234-1234-1234-123456789012/not-a-container", ""},
	} {
		pc, ok := ParsePodCgroup(tc.path)
		if !ok {
			t.Fatalf("%s: not a pod cgroup", tc.path)
		}
		if got := ContainerID(tc.path, pc); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.path, got, tc.want)
		}
	}
}
