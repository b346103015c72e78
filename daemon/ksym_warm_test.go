package daemon

import "testing"

func TestReleaseAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v1252", true},
		{"5.14.0-362.el9.x86_64", true},
		{"5.15.0-91-generic", true},
		{"5.13.19", false},
		{"5.4.0-150-generic", false},
		{"4.19.0", false},
		{"10.0", true},
		{"", false},
		{"weird", false},
	} {
		if got := releaseAtLeast(c.release, 5, 14); got != c.want {
			t.Errorf("releaseAtLeast(%q, 5, 14) = %v, want %v", c.release, got, c.want)
		}
	}
}
