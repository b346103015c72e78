// Package cgroupv2 finds and checks the cgroup v2 hierarchy the DNS probe attaches to, and
// gives the ids the kernel reports for its directories. The probe (bpf), the pod resolver and
// the daemon use this one copy.
package cgroupv2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount returns where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo:
// /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mountinfo: ID parent major:minor root mountpoint opts... - fstype source superopts
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup v2 mount: %w", err)
	}
	return "", errors.New("no cgroup v2 hierarchy is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup`")
}

// Detect finds the cgroup v2 root to observe: /sys/fs/cgroup or /sys/fs/cgroup/unified when
// either is cgroup v2, else wherever mountinfo says.
func Detect() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if isCgroup2(p) {
			return p, nil
		}
	}
	if p, err := Mount(); err == nil {
		return p, nil
	}
	return "", errors.New("no cgroup v2 mount found (looked at /sys/fs/cgroup, /sys/fs/cgroup/unified and /proc/self/mountinfo); " +
		"mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or pass --cgroup-root")
}

// Check says clearly why dir cannot be the probe's cgroup root, and where cgroup v2 is.
func Check(dir string) error {
	mount, mountErr := Mount()
	hint := "find it with `findmnt -t cgroup2`"
	if mountErr == nil {
		hint = "cgroup v2 is mounted at " + mount
	}
	if dir == "" {
		return fmt.Errorf("cgroup root not set; set --cgroup-root to the node's cgroup v2 directory (%s)", hint)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroup root %q not found; set --cgroup-root to the node's cgroup v2 directory (%s)", dir, hint)
		}
		return fmt.Errorf("cgroup root %q: %w; set --cgroup-root to the node's cgroup v2 directory (%s)", dir, err, hint)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("cgroup root %q is not a cgroup v2 directory (a v1 hierarchy or a plain directory); set --cgroup-root to the node's cgroup v2 directory (%s)", dir, hint)
	}
	return nil
}

func isCgroup2(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// ID is the id the kernel reports for a cgroup v2 directory (bpf_skb_cgroup_id,
// bpf_get_current_cgroup_id): the directory's inode number.
func ID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %q: %w", dir, err)
	}
	return st.Ino, nil
}
