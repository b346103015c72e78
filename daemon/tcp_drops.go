package daemon

import (
	"cmp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// DropSortKeys are the sort keys of DIMENSION_DROPS: packets per second (the default, then
// the total), or name.
var DropSortKeys = []string{"packets", "bytes", TCPSortName}

func dropDelta(cur, last bpf.DropCounters) bpf.DropCounters {
	if cur.Packets < last.Packets || cur.Bytes < last.Bytes {
		return cur // the kernel entry was deleted and made again
	}
	return bpf.DropCounters{Packets: cur.Packets - last.Packets, Bytes: cur.Bytes - last.Bytes}
}

func addDropCounts(m map[uint32]bpf.DropCounters, reason uint32, d bpf.DropCounters) {
	v := m[reason]
	v.Packets += d.Packets
	v.Bytes += d.Bytes
	m[reason] = v
}

// addDrops attributes one read of the drop map: per pod like the TCP counters, the host's apart,
// and socket-less drops the probe could not count per destination (addDropDsts) node-wide.
// Callers hold c.mu.
func (c *tcpCollector) addDrops(drops map[bpf.DropKey]bpf.DropCounters) {
	for k, cur := range drops {
		if k.CgroupID == 0 {
			d := dropDelta(cur, c.noSocketLast[k.Reason])
			c.noSocketLast[k.Reason] = cur
			addDropCounts(c.noSocket, k.Reason, d)
			continue
		}
		e := c.entry(k.CgroupID)
		if e.lastDrops == nil {
			e.lastDrops = map[uint32]bpf.DropCounters{}
		}
		d := dropDelta(cur, e.lastDrops[k.Reason])
		e.lastDrops[k.Reason] = cur
		switch {
		case e.subj != nil:
			c.addSubjectDrops(e.subj, k.Reason, d)
		case e.host:
			addDropCounts(c.hostDrops, k.Reason, d)
		default:
			addDropCounts(c.untrackedDrops, k.Reason, d)
		}
	}
}

// addSubjectDrops counts d packets dropped for reason to s. Callers hold c.mu.
func (c *tcpCollector) addSubjectDrops(s *tcpSubject, reason uint32, d bpf.DropCounters) {
	if s.drops == nil {
		s.drops = map[uint32]bpf.DropCounters{}
	}
	addDropCounts(s.drops, reason, d)
	s.dropped += d.Packets
	if c.metrics != nil && d.Packets > 0 {
		c.metrics.observeDrops(s, reason, d.Packets, c.tickNo)
	}
}

// dropLocation is a kernel function where packets were dropped, for one reason.
type dropLocation struct {
	function string
	reason   uint32
}

// maxDropLocations bounds the (function, reason) pairs the daemon keeps; a frame shows the
// heaviest topDropLocations.
const (
	maxDropLocations = 1024
	topDropLocations = 10
)

// addDropLocations adds one read of the kernel's drop locations, named by function. Callers
// hold c.mu.
func (c *tcpCollector) addDropLocations(cur map[bpf.DropLocationKey]uint64) {
	for k, v := range cur {
		d := v
		if last, ok := c.locationLast[k]; ok && v >= last {
			d = v - last
		}
		c.locationLast[k] = v
		if d == 0 {
			continue
		}
		loc := dropLocation{function: bpf.KernelFunction(k.Location), reason: k.Reason}
		if _, ok := c.dropLocations[loc]; !ok && len(c.dropLocations) >= maxDropLocations {
			loc.function = "other"
		}
		c.dropLocations[loc] += d
	}
}

// dropLocationCounts is the heaviest locations since the frame's start (minus base).
func dropLocationCounts(locs, base map[dropLocation]uint64) []*isoobsv1.DropLocationCount {
	var out []*isoobsv1.DropLocationCount
	for l, n := range locs {
		if n -= base[l]; n > 0 {
			out = append(out, &isoobsv1.DropLocationCount{Location: l.function, Reason: bpf.DropReasonName(l.reason), Packets: n})
		}
	}
	SortDropLocations(out)
	if len(out) > topDropLocations {
		out = out[:topDropLocations]
	}
	return out
}

// SortDropLocations orders locations by packets, then location and reason.
func SortDropLocations(ls []*isoobsv1.DropLocationCount) {
	slices.SortFunc(ls, func(a, b *isoobsv1.DropLocationCount) int {
		if c := cmp.Compare(b.Packets, a.Packets); c != 0 {
			return c
		}
		if c := strings.Compare(a.Location, b.Location); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
}

// hubbleAggregates is Hubble's aggregator, nil when the daemon has none.
func (c *tcpCollector) hubbleAggregates() *hubble.Aggregator {
	if c.hubble == nil {
		return nil
	}
	return c.hubble()
}

// hubbleDropRows are Hubble's drops per pod q selects, over q's scope: rows with their packets
// and hubble_reasons from Hubble, sources [hubble].
func (c *tcpCollector) hubbleDropRows(q *tcpQuery) map[hubble.PodKey]*isoobsv1.DropRow {
	agg := c.hubbleAggregates()
	if agg == nil {
		return nil
	}
	req := q.req
	out := map[hubble.PodKey]*isoobsv1.DropRow{}
	agg.ReadPods(func(p *hubble.PodStats) {
		if p.Drops == 0 || (req.GetNamespace() != "" && p.Namespace != req.GetNamespace()) || (req.GetPod() != "" && p.Pod != req.GetPod()) {
			return
		}
		if !q.selector.Empty() && !q.selector.Matches(labels.Set(hubbleK8sLabels(p.Labels))) {
			return
		}
		base := q.hubbleDropBaseline[p.PodKey]
		r := &isoobsv1.DropRow{Node: p.Node, Namespace: p.Namespace, Pod: p.Pod, Workload: p.Workload, WorkloadKind: p.WorkloadKind,
			Pods: 1, Sources: []string{"hubble"}}
		if r.Node == "" {
			r.Node = c.cfg.NodeName
		}
		for reason, n := range p.DropsByReason {
			if b := base[reason]; b <= n {
				n -= b // a pod Hubble forgot and saw again counts from zero
			}
			if n == 0 {
				continue
			}
			r.Packets += n
			r.HubbleReasons = append(r.HubbleReasons, &isoobsv1.DropReasonCount{Reason: reason, Packets: n})
		}
		if r.Packets == 0 {
			return
		}
		sortReasons(r.HubbleReasons)
		out[p.PodKey] = r
	})
	return out
}

// hubbleK8sLabels are the pod's Kubernetes labels among Cilium's (k8s:app=crawler).
func hubbleK8sLabels(ls []string) map[string]string {
	m := map[string]string{}
	for _, l := range ls {
		if kv, ok := strings.CutPrefix(l, "k8s:"); ok {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
	}
	return m
}

// dropRow makes a row of drops by reason (since the frame's start: minus base).
func dropRow(node string, drops, base map[uint32]bpf.DropCounters) *isoobsv1.DropRow {
	r := &isoobsv1.DropRow{Node: node}
	for reason, v := range drops {
		b := base[reason]
		v.Packets -= b.Packets
		v.Bytes -= b.Bytes
		if v.Packets == 0 {
			continue
		}
		r.Packets += v.Packets
		r.Bytes += v.Bytes
		r.Reasons = append(r.Reasons, &isoobsv1.DropReasonCount{Reason: bpf.DropReasonName(reason), Packets: v.Packets, Bytes: v.Bytes})
	}
	sortReasons(r.Reasons)
	return r
}

func sortReasons(rs []*isoobsv1.DropReasonCount) {
	slices.SortFunc(rs, func(a, b *isoobsv1.DropReasonCount) int {
		if c := cmp.Compare(b.Packets, a.Packets); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
}

// mergeDropRow adds o's counts into r, reasons merged by name.
func mergeDropRow(r, o *isoobsv1.DropRow) {
	r.Packets += o.Packets
	r.Bytes += o.Bytes
	r.PacketsPerSecond += o.PacketsPerSecond
	r.Pods += o.Pods
	r.Reasons = mergeReasons(r.Reasons, o.Reasons)
	r.HubbleReasons = mergeReasons(r.HubbleReasons, o.HubbleReasons)
	for _, src := range o.Sources {
		if !slices.Contains(r.Sources, src) {
			r.Sources = append(r.Sources, src)
		}
	}
	slices.Sort(r.Sources)
}

// mergeReasons adds os into rs by reason name (copies: rows share no counts).
func mergeReasons(rs, os []*isoobsv1.DropReasonCount) []*isoobsv1.DropReasonCount {
	for _, x := range os {
		found := false
		for _, y := range rs {
			if y.Reason == x.Reason {
				y.Packets += x.Packets
				y.Bytes += x.Bytes
				found = true
				break
			}
		}
		if !found {
			rs = append(rs, &isoobsv1.DropReasonCount{Reason: x.Reason, Packets: x.Packets, Bytes: x.Bytes})
		}
	}
	sortReasons(rs)
	return rs
}

// dropFrame fills f with the drop rows of the subjects q selects. Callers hold c.mu (read).
func (c *tcpCollector) dropFrame(q *tcpQuery, f *isoobsv1.TopFrame, from, to uint64, haveRate bool, seconds float64) {
	groupBy := q.req.GetGroupBy()
	byKey := map[string]*isoobsv1.DropRow{}
	var rows []*isoobsv1.DropRow
	total := &isoobsv1.DropRow{Node: c.cfg.NodeName}
	source := q.req.GetSource()
	var hub map[hubble.PodKey]*isoobsv1.DropRow
	if source != isoobsv1.Source_SOURCE_EBPF {
		hub = c.hubbleDropRows(q)
	}
	add := func(k string, r *isoobsv1.DropRow) {
		if g := byKey[k]; g != nil {
			mergeDropRow(g, r)
		} else {
			byKey[k] = r
			rows = append(rows, r)
		}
		mergeDropRow(total, r)
	}
	for _, s := range c.subjects {
		if source == isoobsv1.Source_SOURCE_HUBBLE || !c.matches(q, s) || len(s.drops) == 0 {
			continue
		}
		var base map[uint32]bpf.DropCounters
		if q.dropBaseline != nil {
			base = q.dropBaseline[s.key]
		}
		r := dropRow(c.cfg.NodeName, s.drops, base)
		if r.Packets == 0 {
			continue
		}
		r.Pods = 1
		if haveRate && seconds > 0 {
			r.PacketsPerSecond = float64(s.series.At(to)[tcpRateDrops]-s.series.At(from)[tcpRateDrops]) / seconds
		}
		tr := c.row(q, groupBy, &tcpGroup{first: s}, 0) // identity fields only
		r.Namespace, r.Pod, r.PodUid, r.Workload, r.WorkloadKind, r.Cgroup, r.CgroupId, r.Labels =
			tr.Namespace, tr.Pod, tr.PodUid, tr.Workload, tr.WorkloadKind, tr.Cgroup, tr.CgroupId, tr.Labels
		r.Sources = []string{"ebpf"}
		if s.meta != nil {
			pk := hubble.PodKey{Namespace: s.meta.Namespace, Pod: s.meta.Name}
			if h := hub[pk]; h != nil {
				// The same pod: Hubble's reasons join the row, its packets do not (the kernel
				// frees the packets Cilium drops too, and the probe counts them: mostly as drops
				// without a socket, a packet crossing the pod's veth having left its socket).
				r.HubbleReasons, r.Sources = h.HubbleReasons, []string{"ebpf", "hubble"}
				delete(hub, pk)
			}
		}
		add(tcpGroupKey(groupBy, s), r)
	}
	// Pods only Hubble reports drops for (or all, with --source hubble): rows of their own,
	// their packets Hubble's.
	for pk, h := range hub {
		var k string
		switch groupBy {
		case isoobsv1.GroupBy_GROUP_BY_WORKLOAD:
			k = h.Namespace + "/" + h.WorkloadKind + "/" + h.Workload
		case isoobsv1.GroupBy_GROUP_BY_NAMESPACE:
			k = h.Namespace
		case isoobsv1.GroupBy_GROUP_BY_NODE:
			k = ""
		default:
			k = "hubble:" + pk.String()
		}
		if groupBy != isoobsv1.GroupBy_GROUP_BY_POD && groupBy != isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED {
			h.Pod = ""
		}
		add(k, h)
	}
	SortDropRows(rows, q.sortKey)
	if limit := int(q.req.GetLimit()); limit > 0 && len(rows) > limit {
		f.Truncated = uint32(len(rows) - limit)
		rows = rows[:limit]
	}
	f.DropRows = rows
	f.DropTotal = total
	f.DropNoSocket = dropRow(c.cfg.NodeName, c.noSocket, q.noSocketBaseline)
	f.DropLocations = dropLocationCounts(c.dropLocations, q.locationBaseline)
}

// SortDropRows orders drop rows by key (DropSortKeys), heaviest first; ties by name.
func SortDropRows(rows []*isoobsv1.DropRow, key string) {
	name := func(r *isoobsv1.DropRow) string {
		return r.GetNamespace() + "/" + r.GetWorkload() + "/" + r.GetPod() + "/" + r.GetPodUid() + "/" + r.GetCgroup() + "/" + r.GetNode()
	}
	slices.SortStableFunc(rows, func(a, b *isoobsv1.DropRow) int {
		switch key {
		case TCPSortName:
		case "bytes":
			if c := cmp.Compare(b.GetBytes(), a.GetBytes()); c != 0 {
				return c
			}
		default:
			if c := cmp.Compare(b.GetPacketsPerSecond(), a.GetPacketsPerSecond()); c != 0 {
				return c
			}
			if c := cmp.Compare(b.GetPackets(), a.GetPackets()); c != 0 {
				return c
			}
		}
		return strings.Compare(name(a), name(b))
	})
}
