package cgroupv2

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tt := range []struct{ dir, want string }{
		{"", "cgroup root not set; set --cgroup-root"},
		{"/nonexistent-isoobs", `cgroup root "/nonexistent-isoobs" not found; set --cgroup-root`},
		{t.TempDir(), "is not a cgroup v2 directory"},
	} {
		if err := Check(tt.dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%q) = %v, want an error containing %q", tt.dir, err, tt.want)
		}
	}
	if root, err := Detect(); err == nil {
		if err := Check(root); err != nil {
			t.Errorf("Check(Detect() = %s) = %v", root, err)
		}
	}
}
