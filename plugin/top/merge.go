package top

import (
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/isoobs/isoobs/dnsname"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// QNameLabel is a row label read as the query name of a qname-grouped row
// when DNSRow.qname is empty (daemons predating that field).
const QNameLabel = "qname"

// MergeOptions controls Merge.
type MergeOptions struct {
	// GroupBy is the grouping the daemons were asked for (see GroupBys).
	GroupBy string
	// TopNames is how many query names to keep per row and per frame
	// (0 keeps every merged name).
	TopNames int
	// Server (--server) keeps the rows that sent queries to that server (see FilterServer).
	Server string
}

// Merge combines the latest frame of every source (one per node) into one
// Frame. Rows with the same key under opts.GroupBy are summed; their log2
// latency histograms are added bucket by bucket and p50/p99 recomputed from
// the sum, so the result is exact whatever the number of nodes. It is used
// for a single source too, so one code path serves --daemon, --local and
// the cluster fan-out. Rows come out unsorted; see Frame.SortedLimited.
func Merge(frames []*isoobsv1.TopFrame, opts MergeOptions) Frame {
	groupBy := opts.GroupBy
	if groupBy == "" {
		groupBy = GroupByPod
	}
	out := Frame{GroupBy: groupBy, Rows: []Row{}, TopNames: []NameCount{}, Warnings: []string{}, MissingNodes: []MissingNode{}, StaleNodes: []StaleNode{}}

	byKey := map[string]*rowAccumulator{}
	var order []string
	total := newRowAccumulator()
	frameNames := map[string]*NameCount{}
	nodes := map[string]bool{}
	multi := len(frames) > 1

	for _, f := range frames {
		if f == nil {
			continue
		}
		if f.GetNode() != "" {
			nodes[f.GetNode()] = true
		}
		if t := f.GetTime(); t != nil && t.AsTime().After(out.Time) {
			out.Time = t.AsTime()
		}
		// The merged frame covers the widest span of its sources.
		if s := f.GetSince(); s != nil && (out.Since.IsZero() || s.AsTime().Before(out.Since)) {
			out.Since = s.AsTime()
		}
		if iv := f.GetInterval(); iv != nil {
			out.IntervalSeconds = math.Max(out.IntervalSeconds, iv.AsDuration().Seconds())
		}
		out.Truncated += int(f.GetTruncated())
		out.NameOverflow += f.GetNameOverflow()
		for _, w := range f.GetWarnings() {
			if multi && f.GetNode() != "" {
				w = f.GetNode() + ": " + w
			}
			out.Warnings = append(out.Warnings, w)
		}
		for _, r := range f.GetRows() {
			key := rowKey(r, f.GetNode(), groupBy)
			acc, ok := byKey[key]
			if !ok {
				acc = newRowAccumulator()
				byKey[key] = acc
				order = append(order, key)
			}
			acc.add(r, f.GetNode(), groupBy)
			if f.GetTotal() == nil {
				total.add(r, f.GetNode(), groupBy)
			}
		}
		if t := f.GetTotal(); t != nil {
			total.add(t, f.GetNode(), groupBy)
		}
		addNames(frameNames, f.GetTopNames())
	}

	for _, k := range order {
		out.Rows = append(out.Rows, byKey[k].row(opts.TopNames))
	}
	nameServers(out.Rows, groupBy)
	if groupBy == GroupByServer {
		out.Rows = groupByServer(out.Rows)
	}
	out.Total = total.row(opts.TopNames)
	out.Total.Pods = 0
	for _, r := range out.Rows {
		out.Total.Pods += r.Pods
	}
	out.TopNames = topNames(frameNames, opts.TopNames)
	out = out.FilterServer(opts.Server)
	for n := range nodes {
		out.Nodes = append(out.Nodes, n)
	}
	sort.Strings(out.Nodes)
	if out.Nodes == nil {
		out.Nodes = []string{}
	}
	return out
}

// nodeOf is the row's node; daemons may leave it implicit in the frame.
func nodeOf(r *isoobsv1.DNSRow, frameNode string) string {
	if r.GetNode() != "" {
		return r.GetNode()
	}
	return frameNode
}

// QNameOf returns the query name a qname-grouped row stands for: its qname
// field, else the QNameLabel label, else its only top name. Like every name
// from a daemon it is escaped (dnsname.Sanitize): a daemon that sent raw bytes
// must not reach the terminal with them.
func QNameOf(r *isoobsv1.DNSRow) string {
	if q := r.GetQname(); q != "" {
		return dnsname.Sanitize(q)
	}
	if q := r.GetLabels()[QNameLabel]; q != "" {
		return dnsname.Sanitize(q)
	}
	if len(r.GetTopNames()) == 1 {
		return dnsname.Sanitize(r.GetTopNames()[0].GetName())
	}
	return ""
}

// rowKey identifies the group a daemon row belongs to. Rows that could not
// be resolved to a pod stay apart per node and cgroup.
func rowKey(r *isoobsv1.DNSRow, frameNode, groupBy string) string {
	node := nodeOf(r, frameNode)
	unresolved := "cgroup\x00" + node + "\x00" + r.GetCgroup() + "\x00" + strconv.FormatUint(r.GetCgroupId(), 10)
	podKey := func() string {
		switch {
		case r.GetPodUid() != "":
			return "uid\x00" + r.GetPodUid()
		case r.GetPod() != "":
			return "pod\x00" + r.GetNamespace() + "\x00" + r.GetPod()
		default:
			return unresolved
		}
	}
	switch groupBy {
	case GroupByWorkload:
		if r.GetWorkload() == "" {
			return podKey()
		}
		return "wl\x00" + r.GetNamespace() + "\x00" + r.GetWorkloadKind() + "\x00" + r.GetWorkload()
	case GroupByNamespace:
		return "ns\x00" + r.GetNamespace()
	case GroupByQName:
		return "q\x00" + strings.ToLower(QNameOf(r))
	case GroupByNode:
		return "node\x00" + node
	default: // pod, and server (regrouped after the merge)
		return podKey()
	}
}

type rowAccumulator struct {
	first  *isoobsv1.DNSRow
	n      int
	nodes  map[string]bool
	row0   Row
	names  map[string]*NameCount
	zones  map[string]*NameCount
	qtypes map[string]uint64
	hist   []uint64
	labels map[string]string
	// differs marks identity fields on which merged rows disagree; those
	// are left empty rather than showing one arbitrary row's value.
	differs   map[string]bool
	p50, p99  float64 // from the largest row, used only without histograms
	pctWeight uint64
	// Hubble's share: sources seen, identities, DNS proxy latency histogram.
	sources    map[string]bool
	identities map[uint32]bool
	proxyHist  []uint64
	// DNS servers: the client side, and a server pod's own side.
	servers    serverSums
	servedHist []uint64
	podIPs     []string
}

func newRowAccumulator() *rowAccumulator {
	return &rowAccumulator{nodes: map[string]bool{}, names: map[string]*NameCount{}, zones: map[string]*NameCount{}, qtypes: map[string]uint64{}, differs: map[string]bool{}}
}

func (a *rowAccumulator) add(r *isoobsv1.DNSRow, frameNode, groupBy string) {
	a.n++
	if a.first == nil {
		a.first = r
		a.labels = map[string]string{}
		for k, v := range r.GetLabels() {
			a.labels[k] = v
		}
	} else {
		// Keep only labels every merged row agrees on.
		for k, v := range a.labels {
			if r.GetLabels()[k] != v {
				delete(a.labels, k)
			}
		}
		f := a.first
		a.differs["namespace"] = a.differs["namespace"] || r.GetNamespace() != f.GetNamespace()
		a.differs["pod"] = a.differs["pod"] || r.GetPod() != f.GetPod() || r.GetPodUid() != f.GetPodUid()
		a.differs["workload"] = a.differs["workload"] || r.GetWorkload() != f.GetWorkload() || r.GetWorkloadKind() != f.GetWorkloadKind()
		a.differs["cgroup"] = a.differs["cgroup"] || r.GetCgroup() != f.GetCgroup() || r.GetCgroupId() != f.GetCgroupId()
	}
	if node := nodeOf(r, frameNode); node != "" {
		a.nodes[node] = true
	}
	s := &a.row0
	pods := r.GetPods()
	if pods == 0 && r.GetPod() != "" {
		pods = 1
	}
	s.Pods += pods
	s.Queries += r.GetQueries()
	s.QPS += r.GetQps()
	s.Responses += r.GetResponses()
	s.ResponsesPerSecond += r.GetResponsesPerSecond()
	s.NoError += r.GetNoerror()
	s.NXDomain += r.GetNxdomain()
	s.ServFail += r.GetServfail()
	s.Refused += r.GetRefused()
	s.OtherRcode += r.GetOtherRcode()
	s.Malformed += r.GetMalformed()
	mergeSeen(s, r)
	s.Timeouts += r.GetTimeouts()
	s.TimeoutsRate += r.GetTimeoutsRate()
	s.Unsolicited += r.GetUnsolicited()
	s.Evicted += r.GetEvicted()
	s.BytesOut += r.GetBytesOut()
	s.BytesIn += r.GetBytesIn()
	s.ServedQueries += r.GetServedQueries()
	s.ServedResponses += r.GetServedResponses()
	s.ServedNXDomain += r.GetServedNxdomain()
	s.ServedServFail += r.GetServedServfail()
	s.ServedRefused += r.GetServedRefused()
	a.servedHist = addHist(a.servedHist, r.GetServedLatencyLog2Us())
	a.servers.addRow(r.GetServers())
	a.podIPs = addPodIPs(a.podIPs, r.GetPodIps())
	for k, v := range r.GetQueriesByType() {
		a.qtypes[k] += v
	}
	h := r.GetLatencyLog2Us()
	if len(h) > len(a.hist) {
		a.hist = append(a.hist, make([]uint64, len(h)-len(a.hist))...)
	}
	for i, c := range h {
		a.hist[i] += c
	}
	if w := r.GetResponses(); a.pctWeight == 0 || w > a.pctWeight {
		a.pctWeight = w
		a.p50, a.p99 = r.GetLatencyP50Ms(), r.GetLatencyP99Ms()
	}
	addNames(a.names, r.GetTopNames())
	addNames(a.zones, r.GetTopZones())
	s.PolicyDenied += r.GetPolicyDenied()
	s.PolicyDeniedRate += r.GetPolicyDeniedRate()
	if a.sources == nil {
		a.sources, a.identities = map[string]bool{}, map[uint32]bool{}
	}
	for _, src := range r.GetSources() {
		a.sources[src] = true
	}
	if id := r.GetIdentity(); id != 0 {
		a.identities[id] = true
	}
	ph := r.GetProxyLatencyLog2Us()
	if len(ph) > len(a.proxyHist) {
		a.proxyHist = append(a.proxyHist, make([]uint64, len(ph)-len(a.proxyHist))...)
	}
	for i, c := range ph {
		a.proxyHist[i] += c
	}
	if groupBy == GroupByQName && s.QName == "" {
		s.QName = QNameOf(r)
	}
}

func (a *rowAccumulator) row(topN int) Row {
	out := a.row0
	if f := a.first; f != nil {
		if !a.differs["namespace"] {
			out.Namespace = f.GetNamespace()
		}
		if !a.differs["pod"] {
			out.Pod, out.PodUID = f.GetPod(), f.GetPodUid()
		}
		if !a.differs["workload"] {
			out.Workload, out.WorkloadKind = f.GetWorkload(), f.GetWorkloadKind()
		}
		if !a.differs["cgroup"] {
			out.Cgroup, out.CgroupID = f.GetCgroup(), f.GetCgroupId()
		}
	}
	nodes := make([]string, 0, len(a.nodes))
	for n := range a.nodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	out.Node = strings.Join(nodes, ",")
	out.QueriesByType = a.qtypes
	if len(a.labels) > 0 {
		out.Labels = a.labels
	}
	out.latencyLog2Us = a.hist
	if histTotal(a.hist) > 0 {
		out.LatencyP50Ms = topspec.Log2Quantile(a.hist, 0.50)
		out.LatencyP99Ms = topspec.Log2Quantile(a.hist, 0.99)
	} else {
		// A daemon that sends no histogram: the figures of the row with the
		// most responses are the best available.
		out.LatencyP50Ms, out.LatencyP99Ms = a.p50, a.p99
	}
	out.TopNames = topNames(a.names, topN)
	out.TopZones = topNames(a.zones, TopZonesPerRow)
	out.Sources = []string{}
	for _, src := range []string{"ebpf", "hubble"} { // fixed order
		if a.sources[src] {
			out.Sources = append(out.Sources, src)
		}
	}
	if len(a.identities) == 1 {
		for id := range a.identities {
			out.Identity = id
		}
	}
	out.Servers = a.servers.list(out.Queries)
	out.PodIPs = a.podIPs
	out.servedLatencyLog2Us = a.servedHist
	out.ServedLatencyP50Ms = topspec.Log2Quantile(a.servedHist, 0.50)
	out.ServedLatencyP99Ms = topspec.Log2Quantile(a.servedHist, 0.99)
	out.ProxyLatencyP50Ms = topspec.Log2Quantile(a.proxyHist, 0.50)
	out.ProxyLatencyP99Ms = topspec.Log2Quantile(a.proxyHist, 0.99)
	return out
}

// TopZonesPerRow is how many parent domains ("*.crawl.example") a row keeps.
const TopZonesPerRow = 3

func addNames(into map[string]*NameCount, names []*isoobsv1.NameCount) {
	for _, n := range names {
		key := strings.ToLower(n.GetName())
		c, ok := into[key]
		if !ok {
			c = &NameCount{Name: dnsname.Sanitize(n.GetName())}
			into[key] = c
		}
		c.Queries += n.GetQueries()
		c.NXDomain += n.GetNxdomain()
		c.Error += n.GetError()
	}
}

func topNames(names map[string]*NameCount, n int) []NameCount {
	out := make([]NameCount, 0, len(names))
	for _, c := range names {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Queries != out[j].Queries {
			return out[i].Queries > out[j].Queries
		}
		return out[i].Name < out[j].Name
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

func histTotal(h []uint64) uint64 {
	var t uint64
	for _, c := range h {
		t += c
	}
	return t
}
