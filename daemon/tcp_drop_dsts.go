package daemon

// Drops of packets without a socket (most ingress drops: netfilter in a pod's netns, routing,
// a port nobody listens on) carry no cgroup: the probe counts them per destination address, and
// the daemon gives them to the pod of this node whose address it is (status.podIPs). A
// hostNetwork pod's addresses are the node's, not the pod's: they are not indexed. An address
// that is no pod's, or that two pods claim, is no pod's: those drops stay in the node's no-socket
// row, counted.
//
// The probe's table is bounded (4,096 (address, reason) entries; past it the drops are counted
// under no address, drops_destination_map_full), and an address that once got a drop would keep
// its entry forever: after a scan or a few thousand churned pods every new address would overflow.
// The daemon deletes entries idle for dropDstIdle (forgetIdleDropDsts), counting what they held
// at the delete, so a later drop to the address makes a new entry, counted from zero.

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
	// dropDstIdle: a per-destination entry whose counters have not changed for this long is
	// deleted from the kernel table and forgotten here (checked every gcEvery, 10 s: deleted
	// after 60-70 s idle). A minute frees room within a couple of minutes of a scan or a pod
	// churn, while an address that drops now and then (a closed port probed every few
	// seconds, a pod behind a DROP rule) keeps its entry instead of paying the program's
	// entry creation (an allocation) again on each drop; and it is many reads (60 at the
	// default 1 s interval), so an entry is never deleted for looking idle between two reads.
	dropDstIdle = time.Minute
)

// DropDstDeleter is a DropDstSource that can delete idle entries and say what they held when
// deleted (*bpf.TCPProbe).
type DropDstDeleter interface {
	DeleteDropDestinations(keys []bpf.DropDstKey) (map[bpf.DropDstKey]bpf.DropCounters, error)
}

// dropDstLast is a per-destination entry as last read and when its counters last changed.
type dropDstLast struct {
	c       bpf.DropCounters
	changed time.Time
}

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

// rebuildPodAddrs indexes the addresses of the pods that have a cgroup on this node (not those of
// hostNetwork pods, the node's). Callers hold c.mu.
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
		if !ok || p.HostNetwork {
			// A hostNetwork pod's status.podIPs are the node's: drops to them are the node's
			// (the no-socket row), even when it is the only such pod on the node.
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
		last := c.dstLast[k]
		if last == nil {
			last = &dropDstLast{changed: now}
			c.dstLast[k] = last
		}
		d := dropDelta(cur, last.c)
		last.c = cur
		if d.Packets == 0 {
			continue
		}
		last.changed = now
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

// forgetIdleDropDsts deletes the per-destination entries whose counters have not changed for
// dropDstIdle from the kernel table and forgets them, so the table keeps room for new addresses.
// The probe returns what each entry held when it was deleted: drops counted since the last read
// are attributed as any read's (not lost, not counted twice), and a later drop to the address
// makes a new entry whose counters are all new (no last value: no negative delta). What can be
// lost is an increment racing the delete itself (bpf.TCPProbe.DeleteDropDestinations). Callers
// hold c.mu.
func (c *tcpCollector) forgetIdleDropDsts(now time.Time) {
	dd, ok := c.src.(DropDstDeleter)
	if !ok {
		return
	}
	var idle []bpf.DropDstKey
	for k, l := range c.dstLast {
		if now.Sub(l.changed) >= dropDstIdle {
			idle = append(idle, k)
		}
	}
	if len(idle) == 0 {
		return
	}
	final, err := dd.DeleteDropDestinations(idle)
	c.addDropDsts(final, now)
	for _, k := range idle {
		if _, deleted := final[k]; deleted || err == nil {
			// Deleted, or not in the table any more: a new entry starts from zero. (An entry
			// the delete failed for is kept and tried again.)
			delete(c.dstLast, k)
		}
	}
	c.dropDstsForgotten += uint64(len(final))
	if err != nil {
		c.readErrors++
	}
}
