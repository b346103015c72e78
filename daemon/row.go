package daemon

// A frame's rows: each selected subject's part (its counts over the frame's scope and rate
// window) is added into one group per row, and each group becomes a DNSRow.

import (
	"slices"
	"sort"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/topk"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// part is one subject's contribution to a frame.
type part struct {
	s       *subject
	tot     counters
	servers *serverSet // nil: none (a look-back or name-filtered part)
	rate    rateSample
	names   *nameSummary
	// hub is the Hubble share: a Hubble subject's own, or its eBPF subject's peer's.
	hub *hubblePart
}

// group accumulates the parts of one row.
type group struct {
	key     string
	first   *subject
	qname   string
	tot     counters
	servers serverSet
	// podIPs are the addresses of the group's pods that served DNS queries (bounded).
	podIPs []string
	rate   rateSample
	names  []*nameSummary
	pods   int
	// nameError is the summed Space-Saving error bound of a qname row.
	nameError uint64
	// Sources seen and what Hubble added (see hubble.go).
	ebpf, hubble bool
	identity     uint32
	hubbleNode   string
	proxyLatency [len(counters{}.LatencyLog2US)]uint64
}

func (g *group) add(p *part) {
	if g.first == nil {
		g.first = p.s
	}
	g.tot.add(&p.tot)
	if p.servers != nil {
		g.servers.addSet(p.servers, maxGroupServers)
	}
	if p.tot.ServerQueries > 0 && p.s.meta != nil {
		for _, ip := range p.s.meta.IPs {
			if len(g.podIPs) < maxGroupServers && !slices.Contains(g.podIPs, ip) {
				g.podIPs = append(g.podIPs, ip)
			}
		}
	}
	g.rate.add(&p.rate)
	if p.names != nil {
		g.names = append(g.names, p.names)
	}
	g.pods++
	g.addHubble(p)
}

// groupParts adds the parts into one group per row of groupBy, in first-seen order.
func groupParts(groupBy isoobsv1.GroupBy, parts []part) []*group {
	if groupBy == isoobsv1.GroupBy_GROUP_BY_QNAME {
		return qnameGroups(parts)
	}
	var groups []*group
	byKey := map[string]*group{}
	for i := range parts {
		p := &parts[i]
		k := groupKey(groupBy, p.s)
		g := byKey[k]
		if g == nil {
			g = &group{key: k}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.add(p)
	}
	return groups
}

func groupKey(by isoobsv1.GroupBy, s *subject) string {
	switch by {
	case isoobsv1.GroupBy_GROUP_BY_WORKLOAD:
		if s.meta == nil {
			return "subject/" + s.key
		}
		return s.meta.Namespace + "/" + s.meta.WorkloadKind + "/" + s.meta.Workload
	case isoobsv1.GroupBy_GROUP_BY_NAMESPACE:
		if s.meta == nil {
			return "" // namespace unknown (no Kubernetes metadata)
		}
		return s.meta.Namespace
	case isoobsv1.GroupBy_GROUP_BY_NODE:
		return ""
	default:
		return s.key
	}
}

// qnameGroups makes one row per query name over the selected pods.
func qnameGroups(parts []part) []*group {
	byName := map[string]*group{}
	var out []*group
	for i := range parts {
		p := &parts[i]
		if p.names == nil {
			continue
		}
		p.names.names.Each(func(it *topk.Item) {
			g := byName[it.Name]
			if g == nil {
				g = &group{key: it.Name, qname: it.Name, names: []*nameSummary{}}
				byName[it.Name] = g
				out = append(out, g)
			}
			g.tot.Queries += it.Count
			g.tot.Rcode[bpf.RcodeNXDomain] += it.NXDomain
			g.nameError += it.Error
			g.pods++
			// Names of a merged part may be Hubble's (the probe kept none for that pod).
			if p.s.hub != nil || p.hub != nil && p.names != p.s.names {
				g.hubble = true
			} else {
				g.ebpf = true
			}
		})
	}
	return out
}

// topQnameGroups keeps the limit (or, without one, maxRows) heaviest name groups under the
// sort key, and says how many it dropped.
func topQnameGroups(groups []*group, sortKey string, limit, maxRows int) ([]*group, uint32) {
	keep := maxRows
	if limit > 0 {
		keep = limit
	}
	if len(groups) <= keep {
		return groups, 0
	}
	key := func(g *group) uint64 {
		if sortKey == "nxdomain" || sortKey == "errors" {
			return g.tot.Rcode[bpf.RcodeNXDomain]
		}
		return g.tot.Queries
	}
	sort.Slice(groups, func(i, j int) bool {
		if a, b := key(groups[i]), key(groups[j]); a != b {
			return a > b
		}
		return groups[i].qname < groups[j].qname
	})
	return groups[:keep], uint32(len(groups) - keep)
}

// mergeNames sums the summaries of several pods. Counts and error bounds add up, so the merged
// bounds stay valid; a name missing from one pod's summary may undercount by that pod's
// minimum, which the error field also covers when the pod overflowed.
func mergeNames(sums []*topk.SpaceSaving, n int) []*isoobsv1.NameCount {
	if n <= 0 || len(sums) == 0 {
		return nil
	}
	if len(sums) == 1 {
		return toNameCounts(sums[0].Top(n))
	}
	index := map[string]int{}
	var items []topk.Item
	for _, s := range sums {
		s.Each(func(it *topk.Item) {
			i, ok := index[it.Name]
			if !ok {
				i = len(items)
				index[it.Name] = i
				items = append(items, topk.Item{Name: it.Name})
			}
			m := &items[i]
			m.Count += it.Count
			m.Error += it.Error
			m.NXDomain += it.NXDomain
		})
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].Count != items[j].Count {
			return items[i].Count > items[j].Count
		}
		return items[i].Name < items[j].Name
	})
	if len(items) > n {
		items = items[:n]
	}
	return toNameCounts(items)
}

func toNameCounts(items []topk.Item) []*isoobsv1.NameCount {
	out := make([]*isoobsv1.NameCount, len(items))
	for i, it := range items {
		out[i] = &isoobsv1.NameCount{Name: it.Name, Queries: it.Count, Nxdomain: it.NXDomain, Error: it.Error}
	}
	return out
}

func (c *collector) row(by isoobsv1.GroupBy, g *group, topNames int, seconds, scopeSeconds float64) *isoobsv1.DNSRow {
	t := &g.tot
	r := &isoobsv1.DNSRow{
		Node:      c.cfg.NodeName,
		Queries:   t.Queries,
		Responses: t.Responses,
		Noerror:   t.Rcode[bpf.RcodeNoError], Nxdomain: t.Rcode[bpf.RcodeNXDomain], Servfail: t.Rcode[bpf.RcodeServFail],
		Refused: t.Rcode[bpf.RcodeRefused], OtherRcode: t.Rcode[bpf.RcodeOther],
		Malformed: t.Malformed, BytesOut: t.BytesOut, BytesIn: t.BytesIn,
		ServedQueries: t.ServerQueries, ServedResponses: t.ServerResponses,
		LatencyLog2Us: append([]uint64(nil), t.LatencyLog2US[:]...),
		LatencyP50Ms:  topspec.Log2Quantile(t.LatencyLog2US[:], 0.50),
		LatencyP99Ms:  topspec.Log2Quantile(t.LatencyLog2US[:], 0.99),
		Pods:          uint32(g.pods),
		Timeouts:      t.Timeouts, Unsolicited: t.Unsolicited, Evicted: t.Evicted,
		Servers:        serverRows(&g.servers, t.OtherServerQueries, t.OtherServerAnswers),
		ServedNxdomain: t.ServedRcode[bpf.RcodeNXDomain], ServedServfail: t.ServedRcode[bpf.RcodeServFail],
		ServedRefused: t.ServedRcode[bpf.RcodeRefused],
		PodIps:        g.podIPs,
	}
	if t.ServerResponses > 0 {
		r.ServedLatencyLog2Us = append([]uint64(nil), t.ServedLatencyLog2US[:]...)
		r.ServedLatencyP50Ms = topspec.Log2Quantile(t.ServedLatencyLog2US[:], 0.50)
		r.ServedLatencyP99Ms = topspec.Log2Quantile(t.ServedLatencyLog2US[:], 0.99)
	}
	if seconds > 0 {
		r.Qps = float64(g.rate[rQueries]) / seconds
		r.ResponsesPerSecond = float64(g.rate[rResponses]) / seconds
		r.NxdomainRate = float64(g.rate[rNXDomain]) / seconds
		r.ServfailRate = float64(g.rate[rServFail]) / seconds
		r.TimeoutsRate = float64(g.rate[rTimeouts]) / seconds
	}
	hubbleRow(r, g, seconds)
	for i, n := range t.QType {
		if n > 0 {
			if r.QueriesByType == nil {
				r.QueriesByType = map[string]uint64{}
			}
			r.QueriesByType[qtypeNames[i]] = n
		}
	}
	if g.qname != "" {
		// A name row: counts come from the name summaries, rates are the scope average.
		r.Qname = g.qname
		r.LatencyLog2Us, r.LatencyP50Ms, r.LatencyP99Ms = nil, 0, 0
		r.TopNames = []*isoobsv1.NameCount{{Name: g.qname, Queries: t.Queries, Nxdomain: t.Rcode[bpf.RcodeNXDomain], Error: g.nameError}}
		r.Qps, r.ResponsesPerSecond, r.NxdomainRate, r.ServfailRate, r.TimeoutsRate = 0, 0, 0, 0, 0
		if scopeSeconds > 0 {
			r.Qps = float64(t.Queries) / scopeSeconds
			r.NxdomainRate = float64(t.Rcode[bpf.RcodeNXDomain]) / scopeSeconds
		}
		return r
	}
	r.TopNames = mergeNames(summaries(g.names, false), topNames)
	r.TopZones = mergeNames(summaries(g.names, true), topZones)
	s := g.first
	if s == nil {
		return r
	}
	switch by {
	case isoobsv1.GroupBy_GROUP_BY_POD, isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED:
		r.PodUid = s.uid
		r.Cgroup = s.cgroupPath
		r.CgroupId = s.cgroupID
		if m := s.meta; m != nil {
			r.Namespace, r.Pod, r.Workload, r.WorkloadKind, r.Labels = m.Namespace, m.Name, m.Workload, m.WorkloadKind, m.Labels
		}
	case isoobsv1.GroupBy_GROUP_BY_WORKLOAD:
		if m := s.meta; m != nil {
			r.Namespace, r.Workload, r.WorkloadKind = m.Namespace, m.Workload, m.WorkloadKind
		} else {
			r.PodUid, r.Cgroup, r.CgroupId = s.uid, s.cgroupPath, s.cgroupID
		}
	case isoobsv1.GroupBy_GROUP_BY_NAMESPACE:
		if m := s.meta; m != nil {
			r.Namespace = m.Namespace
		}
	}
	return r
}

// sortRows orders rows by key as the plugin does (topspec.Compare), so the rows a frame keeps
// under a limit are the ones the plugin would show first.
func sortRows(rows []*isoobsv1.DNSRow, key string) {
	metrics := func(r *isoobsv1.DNSRow) topspec.Metrics {
		return topspec.Metrics{QPS: r.Qps, Queries: r.Queries, NXDomain: r.Nxdomain, ServFail: r.Servfail,
			Errors: r.Nxdomain + r.Servfail + r.Refused + r.OtherRcode, Malformed: r.Malformed, LatencyP99Ms: r.LatencyP99Ms,
			Timeouts: r.Timeouts}
	}
	name := func(r *isoobsv1.DNSRow) string {
		return r.Namespace + "/" + r.Workload + "/" + r.Pod + "/" + r.Qname + "/" + r.PodUid + "/" + r.Cgroup
	}
	slices.SortStableFunc(rows, func(a, b *isoobsv1.DNSRow) int {
		ma, mb := metrics(a), metrics(b)
		return topspec.Compare(key, &ma, &mb, name(a), name(b))
	})
}

// part is s's contribution to a frame of q: its counts over the frame's scope and rate window.
func (c *collector) part(q *topQuery, s *subject, haveRate bool, from, to uint64) part {
	p := part{s: s, tot: s.total, names: s.names, servers: &s.servers}
	if q.baseline != nil {
		b := q.baseline[s.key]
		p.tot.sub(&b)
		p.names = q.sink.perSubject[s.key]
		if bs, ok := q.serversBaseline[s.key]; ok {
			servers := s.servers.clone()
			servers.sub(&bs)
			p.servers = &servers
		}
	}
	if haveRate {
		p.rate = s.series.At(to)
		old := s.series.At(from)
		p.rate.sub(&old)
	}
	return p
}
