package daemon

// Drops of packets without a socket (most ingress drops: netfilter in a pod's netns, routing,
// a port nobody listens on) carry no cgroup: the probe counts them per destination address, and
// the daemon gives them to the pod of this node whose address it is (status.podIPs). An address
// that is no pod's, or that two pods claim (hostNetwork pods share the node's), is no pod's:
// those drops stay in the node's no-socket row, counted.

import (
	"io/fs"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podresolver"
)

// DropDstSource is the probe's per-destination table of socket-less drops (*bpf.TCPProbe).
type DropDstSource interface {
	ReadDropDestinations() (map[bpf.DropDstKey]bpf.DropCounters, error)
}

const (
	// podAddrsMinRebuild: the address index is rebuilt at most this often (an address not in
	// it asks for a rebuild); podAddrsMaxAge: while socket-less drops come, at least this often
	// (a pod's address may pass to another pod).
	podAddrsMinRebuild = 2 * time.Second
	podAddrsMaxAge     = 30 * time.Second
	// maxPodCgroupDepth bounds the walk for pod cgroups below the root (kubepods.slice/
	// kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice is 3; a kubelet
	// --cgroup-root adds some).
	maxPodCgroupDepth = 8
)

// podAddrIndex maps this node's pod addresses to their pod-level cgroup id.
type podAddrIndex struct {
	byAddr    map[netip.Addr]uint64
	ambiguous map[netip.Addr]bool // claimed by two or more pods: no pod's
	notPod    map[netip.Addr]bool // seen since the build and no pod's then
	built     time.Time
	builds    uint64
}

// walkPodCgroups lists the pod-level cgroups below root: pod UID → cgroup id.
func walkPodCgroups(root string) map[string]uint64 {
	out := map[string]uint64{}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if strings.Count(rel, "/") > maxPodCgroupDepth {
			return fs.SkipDir
		}
		pc, ok := podresolver.ParsePodCgroup(rel)
		if !ok {
			return nil
		}
		if pc.PodPath == rel {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					out[pc.UID] = st.Ino
				}
			}
		}
		return fs.SkipDir // nothing below a pod is another pod
	})
	return out
}

// rebuildPodAddrs indexes the addresses of the pods that have a cgroup on this node. Callers
// hold c.mu.
func (c *tcpCollector) rebuildPodAddrs(now time.Time) {
	idx := &c.podAddrs
	idx.byAddr, idx.ambiguous, idx.notPod = map[netip.Addr]uint64{}, map[netip.Addr]bool{}, map[netip.Addr]bool{}
	idx.built = now
	idx.builds++
	if c.pods == nil {
		return
	}
	list := c.podCgroups
	if list == nil {
		list = walkPodCgroups
	}
	for uid, id := range list(c.cfg.CgroupRoot) {
		p, ok := c.pods.Lookup(uid)
		if !ok {
			continue
		}
		for _, s := range p.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			a = a.Unmap()
			if other, ok := idx.byAddr[a]; ok && other != id {
				idx.ambiguous[a] = true
				continue
			}
			idx.byAddr[a] = id
		}
	}
	for a := range idx.ambiguous {
		delete(idx.byAddr, a)
	}
}

type dropDstDelta struct {
	key bpf.DropDstKey
	d   bpf.DropCounters
}

// addDropDsts attributes one read of the per-destination drops to the pods whose addresses they
// went to; the rest joins the node's no-socket drops. Callers hold c.mu.
func (c *tcpCollector) addDropDsts(dsts map[bpf.DropDstKey]bpf.DropCounters, now time.Time) {
	var deltas []dropDstDelta
	rebuild := false
	idx := &c.podAddrs
	for k, cur := range dsts {
		d := dropDelta(cur, c.dstLast[k])
		c.dstLast[k] = cur
		if d.Packets == 0 {
			continue
		}
		deltas = append(deltas, dropDstDelta{k, d})
		if _, ok := idx.byAddr[k.Addr]; !ok && k.Addr.IsValid() && !idx.ambiguous[k.Addr] && !idx.notPod[k.Addr] {
			rebuild = true
		}
	}
	if len(deltas) == 0 {
		return
	}
	if age := now.Sub(idx.built); idx.builds == 0 || (rebuild && age >= podAddrsMinRebuild) || age >= podAddrsMaxAge {
		c.rebuildPodAddrs(now)
	}
	for _, x := range deltas {
		if id, ok := idx.byAddr[x.key.Addr]; ok {
			switch e := c.entry(id); {
			case e.subj != nil:
				c.addSubjectDrops(e.subj, x.key.Reason, x.d)
				c.dropsByAddress += x.d.Packets
				continue
			case !e.host:
				addDropCounts(c.untrackedDrops, x.key.Reason, x.d) // a pod past MaxTrackedPods
				continue
			}
		} else if x.key.Addr.IsValid() && !idx.ambiguous[x.key.Addr] {
			idx.notPod[x.key.Addr] = true
		}
		if idx.ambiguous[x.key.Addr] {
			c.dropsAmbiguousAddress += x.d.Packets
		}
		addDropCounts(c.noSocket, x.key.Reason, x.d)
	}
}
