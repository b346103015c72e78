package podresolver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/bpf"
)

// DetectCgroupRoot finds the cgroup v2 mount: /sys/fs/cgroup on unified hosts,
// /sys/fs/cgroup/unified on hybrid ones, or wherever /proc/self/mountinfo says.
func DetectCgroupRoot() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if isCgroup2(p) {
			return p, nil
		}
	}
	if p, err := bpf.Cgroup2Mount(); err == nil {
		return p, nil
	}
	return "", errors.New("no cgroup v2 mount found (looked at /sys/fs/cgroup, /sys/fs/cgroup/unified and /proc/self/mountinfo); " +
		"mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or pass --cgroup-root")
}

// CheckCgroupRoot says clearly why a configured root cannot be used.
func CheckCgroupRoot(root string) error {
	st, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("cgroup root %s: %w; pass --cgroup-root with the cgroup v2 mount (usually /sys/fs/cgroup)", root, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("cgroup root %s is not a directory; pass --cgroup-root with the cgroup v2 mount", root)
	}
	if !isCgroup2(root) {
		return fmt.Errorf("cgroup root %s is not a cgroup v2 filesystem; pass --cgroup-root with the cgroup v2 mount (see `mount -t cgroup2`)", root)
	}
	return nil
}

func isCgroup2(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// CgroupID is the id the kernel reports for a cgroup v2 directory (bpf_skb_cgroup_id,
// bpf_get_current_cgroup_id): the directory's inode number.
func CgroupID(dir string) (uint64, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", dir)
	}
	return sys.Ino, nil
}

// Cgroup is one resolved cgroup id.
type Cgroup struct {
	ID uint64
	// Path relative to the cgroup root, starting with "/".
	Path string
	// Pod is set when the cgroup is a pod's or a container's.
	Pod *PodCgroup
}

// Resolver maps cgroup ids to paths by walking the cgroup tree. Unknown ids trigger a rescan, at
// most once per MinRescan, so a flood of unknown ids costs one walk per period.
type Resolver struct {
	root      string
	minRescan time.Duration
	now       func() time.Time

	mu       sync.Mutex
	byID     map[uint64]Cgroup
	lastScan time.Time
	scans    uint64
	scanErr  error
}

// NewResolver walks root once.
func NewResolver(root string, minRescan time.Duration) *Resolver {
	return newResolver(root, minRescan, time.Now)
}

func newResolver(root string, minRescan time.Duration, now func() time.Time) *Resolver {
	r := &Resolver{root: root, minRescan: minRescan, now: now, byID: map[uint64]Cgroup{}}
	r.mu.Lock()
	r.rescanLocked()
	r.mu.Unlock()
	return r
}

// Root is the cgroup v2 mount the resolver walks.
func (r *Resolver) Root() string { return r.root }

// Resolve returns the cgroup for id, rescanning (rate-limited) when it is unknown.
func (r *Resolver) Resolve(id uint64) (Cgroup, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.byID[id]; ok {
		return c, true
	}
	if r.now().Sub(r.lastScan) >= r.minRescan {
		r.rescanLocked()
		c, ok := r.byID[id]
		return c, ok
	}
	return Cgroup{}, false
}

// Exists tells whether the cgroup directory of a known id is still there.
func (r *Resolver) Exists(id uint64) bool {
	r.mu.Lock()
	c, ok := r.byID[id]
	r.mu.Unlock()
	if !ok {
		return false
	}
	got, err := CgroupID(filepath.Join(r.root, c.Path))
	return err == nil && got == id
}

// Forget drops an id whose cgroup is gone.
func (r *Resolver) Forget(id uint64) {
	r.mu.Lock()
	delete(r.byID, id)
	r.mu.Unlock()
}

// Scans counts tree walks so far.
func (r *Resolver) Scans() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scans
}

// Err is the last walk's error, if any.
func (r *Resolver) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scanErr
}

func (r *Resolver) rescanLocked() {
	r.lastScan = r.now()
	r.scans++
	byID := make(map[uint64]Cgroup, len(r.byID))
	r.scanErr = filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Cgroups come and go during the walk; a vanished directory is not an error.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if p == r.root {
				return err
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		sys, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, r.root), "/")
		c := Cgroup{ID: sys.Ino, Path: rel}
		if pc, ok := ParsePodCgroup(rel); ok {
			c.Pod = &pc
		}
		byID[sys.Ino] = c
		return nil
	})
	r.byID = byID
}
