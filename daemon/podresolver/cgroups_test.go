package podresolver

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/isoobs/isoobs/cgroupv2"
)

// The resolver walks any directory tree the same way; a temp dir stands in for the cgroup fs.
func TestResolverRescanIsRateLimited(t *testing.T) {
	root := t.TempDir()
	pod := filepath.Join(root, "kubepods", "burstable", "pod8f2a1c3e-5b7d-4e9f-a1b2-c3d4e5f60718")
	host := filepath.Join(root, "system.slice", "sshd.service")
	for _, d := range []string{filepath.Join(pod, "ctr1"), host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	r := newResolver(root, time.Second, func() time.Time { return now })

	ctrID, _ := cgroupv2.ID(filepath.Join(pod, "ctr1"))
	c, ok := r.Resolve(ctrID)
	if !ok || c.Pod == nil || c.Pod.UID != "8f2a1c3e-5b7d-4e9f-a1b2-c3d4e5f60718" || c.Path != "/kubepods/burstable/pod8f2a1c3e-5b7d-4e9f-a1b2-c3d4e5f60718/ctr1" {
		t.Fatalf("container cgroup: %+v %v", c, ok)
	}
	hostID, _ := cgroupv2.ID(host)
	if c, ok := r.Resolve(hostID); !ok || c.Pod != nil {
		t.Fatalf("host cgroup: %+v %v", c, ok)
	}

	// A cgroup created after the walk is found by a rescan, but at most one per period.
	newDir := filepath.Join(pod, "ctr2")
	if err := os.Mkdir(newDir, 0o755); err != nil {
		t.Fatal(err)
	}
	newID, _ := cgroupv2.ID(newDir)
	scans := r.Scans()
	if _, ok := r.Resolve(newID); ok {
		t.Fatal("resolved without a rescan")
	}
	if _, ok := r.Resolve(12345678); ok || r.Scans() != scans {
		t.Fatalf("rescanned within the period: %d scans", r.Scans())
	}
	now = now.Add(time.Second)
	if c, ok := r.Resolve(newID); !ok || c.Pod == nil || r.Scans() != scans+1 {
		t.Fatalf("after the period: %+v %v scans %d", c, ok, r.Scans())
	}
	if !r.Exists(newID) {
		t.Fatal("Exists false for a live cgroup")
	}
	if err := os.Remove(newDir); err != nil {
		t.Fatal(err)
	}
	if r.Exists(newID) {
		t.Fatal("Exists true for a removed cgroup")
	}
}
