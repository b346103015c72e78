package podresolver

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/isoobs/isoobs/cgroupv2"
)

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
	got, err := cgroupv2.ID(filepath.Join(r.root, c.Path))
	return err == nil && got == id
}

// Forget drops an id whose cgroup is gone.
func (r *Resolver) Forget(id uint64) {
	r.mu.Lock()
	delete(r.byID, id)
	r.mu.Unlock()
}

// PodCgroups returns the cgroups of the pod with this UID (its own and every one below it),
// after a rescan (rate-limited like Resolve's) so new containers are found.
func (r *Resolver) PodCgroups(uid string) []Cgroup {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.now().Sub(r.lastScan) >= r.minRescan {
		r.rescanLocked()
	}
	var out []Cgroup
	for _, c := range r.byID {
		if c.Pod != nil && c.Pod.UID == uid {
			out = append(out, c)
		}
	}
	return out
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
