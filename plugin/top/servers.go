package top

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// GroupByServer makes one row per DNS server: the daemons send pod rows and Merge regroups
// them by the servers their queries went to, next to each server pod's own served counts.
const GroupByServer = "server"

// OtherServer is the address of the entry that sums a row's servers past the daemons' bound.
const OtherServer = "other"

// maxPodIPs bounds the server addresses a merged row keeps.
const maxPodIPs = 16

// Server is one server of a client row: the row's queries to it, and what came back.
type Server struct {
	// Address is the IP (IP:port when the port is not 53) the pods sent their queries to, or
	// "other".
	Address string `json:"address"`
	// Name is the server pod (namespace/pod) when a daemon reported a DNS server pod with this
	// address; empty otherwise (a Service IP, node-local-dns on the host network, an upstream).
	Name string `json:"name,omitempty"`
	// Share is the part of the row's queries sent to this server, 0..1.
	Share    float64 `json:"share"`
	Queries  uint64  `json:"queries"`
	Answers  uint64  `json:"answers"`
	NXDomain uint64  `json:"nxdomain"`
	ServFail uint64  `json:"servfail"`
	// Timed answers were matched with their query; LatencyAvgMs is their mean client-side latency.
	Timed        uint64  `json:"timed"`
	LatencyAvgMs float64 `json:"latencyAvgMs"`

	latencySumUs uint64
}

// serverSums accumulates servers by address while rows merge.
type serverSums struct {
	by    map[string]*Server
	order []string
}

func (s *serverSums) add(address string, queries, answers, nxdomain, servfail, timed, latencySumUs uint64) {
	if s.by == nil {
		s.by = map[string]*Server{}
	}
	e := s.by[address]
	if e == nil {
		e = &Server{Address: address}
		s.by[address] = e
		s.order = append(s.order, address)
	}
	e.Queries += queries
	e.Answers += answers
	e.NXDomain += nxdomain
	e.ServFail += servfail
	e.Timed += timed
	e.latencySumUs += latencySumUs
}

func (s *serverSums) addRow(servers []*isoobsv1.DNSServer) {
	for _, v := range servers {
		s.add(v.GetAddress(), v.GetQueries(), v.GetAnswers(), v.GetNxdomain(), v.GetServfail(), v.GetTimed(), v.GetLatencySumUs())
	}
}

// list is the servers, most queried first ("other" last), with shares of rowQueries.
func (s *serverSums) list(rowQueries uint64) []Server {
	out := make([]Server, 0, len(s.order))
	for _, a := range s.order {
		e := *s.by[a]
		if rowQueries > 0 {
			e.Share = float64(e.Queries) / float64(rowQueries)
		}
		if e.Timed > 0 {
			e.LatencyAvgMs = float64(e.latencySumUs) / float64(e.Timed) / 1000
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Server) int {
		if (a.Address == OtherServer) != (b.Address == OtherServer) {
			if a.Address == OtherServer {
				return 1
			}
			return -1
		}
		if a.Queries != b.Queries {
			return cmp.Compare(b.Queries, a.Queries)
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out
}

// addPodIPs keeps the union of the rows' server pod addresses, bounded.
func addPodIPs(into []string, ips []string) []string {
	for _, ip := range ips {
		if len(into) >= maxPodIPs {
			break
		}
		if !slices.Contains(into, ip) {
			into = append(into, ip)
		}
	}
	return into
}

// nameServers fills the Name of every server whose address is a DNS server pod's (a row that
// served queries and carries its pod IPs), in the frame's grouping's terms.
func nameServers(rows []Row, groupBy string) {
	names := map[string]string{}
	for i := range rows {
		r := &rows[i]
		if r.ServedQueries == 0 {
			continue
		}
		for _, ip := range r.PodIPs {
			names[ip] = r.DisplayName(groupBy)
		}
	}
	if len(names) == 0 {
		return
	}
	for i := range rows {
		for j := range rows[i].Servers {
			s := &rows[i].Servers[j]
			s.Name = names[serverIP(s.Address)]
		}
	}
}

// serverIP is the IP of a server address (IP or IP:port).
func serverIP(address string) string {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		return ap.Addr().String()
	}
	return address
}

// groupByServer turns merged pod rows into one row per server: the queries the pods sent it
// (Pods counts the client pods, Share is its part of all their queries, LatencyAvgMs their
// mean latency to it), and for a server pod its own served counts and server-side latency
// percentiles (LatencyP50Ms/LatencyP99Ms). A server pod no client on any node addressed
// directly (its clients used a Service IP) gets a row with its served counts only, under its
// first address.
func groupByServer(pods []Row) []Row {
	type acc struct {
		row     Row
		sums    serverSums
		served  []uint64
		clients uint32
	}
	by := map[string]*acc{}
	var order []string
	get := func(address string) *acc {
		a := by[address]
		if a == nil {
			a = &acc{row: Row{Server: address, TopNames: []NameCount{}, TopZones: []NameCount{}}}
			by[address] = a
			order = append(order, address)
		}
		return a
	}
	var all uint64
	for i := range pods {
		p := &pods[i]
		for _, s := range p.Servers {
			a := get(s.Address)
			a.clients++
			a.sums.add(s.Address, s.Queries, s.Answers, s.NXDomain, s.ServFail, s.Timed, s.latencySumUs)
			if p.Queries > 0 {
				a.row.QPS += p.QPS * float64(s.Queries) / float64(p.Queries)
			}
			all += s.Queries
		}
	}
	for i := range pods {
		p := &pods[i]
		if p.ServedQueries == 0 || len(p.PodIPs) == 0 {
			continue
		}
		// The pod's own counts go to one row: the first of its addresses its clients used,
		// else its first address (a dual-stack pod is one server, not two).
		served := ""
		for _, ip := range p.PodIPs {
			if a := by[ip]; a != nil {
				a.row.Namespace, a.row.Pod, a.row.PodUID, a.row.Workload, a.row.WorkloadKind, a.row.Node = p.Namespace, p.Pod, p.PodUID, p.Workload, p.WorkloadKind, p.Node
				if served == "" {
					served = ip
				}
			}
		}
		if served == "" {
			served = p.PodIPs[0]
		}
		a := get(served)
		r := &a.row
		r.Namespace, r.Pod, r.PodUID, r.Workload, r.WorkloadKind, r.Node = p.Namespace, p.Pod, p.PodUID, p.Workload, p.WorkloadKind, p.Node
		r.ServedQueries += p.ServedQueries
		r.ServedResponses += p.ServedResponses
		r.ServedNXDomain += p.ServedNXDomain
		r.ServedServFail += p.ServedServFail
		r.ServedRefused += p.ServedRefused
		a.served = addHist(a.served, p.servedLatencyLog2Us)
	}
	out := make([]Row, 0, len(order))
	for _, k := range order {
		a := by[k]
		r := a.row
		r.Pods = a.clients
		if list := a.sums.list(all); len(list) == 1 {
			s := list[0]
			r.Queries, r.Responses, r.NXDomain, r.ServFail = s.Queries, s.Answers, s.NXDomain, s.ServFail
			r.Share, r.LatencyAvgMs = s.Share, s.LatencyAvgMs
		}
		r.servedLatencyLog2Us = a.served
		r.ServedLatencyP50Ms = topspec.Log2Quantile(a.served, 0.50)
		r.ServedLatencyP99Ms = topspec.Log2Quantile(a.served, 0.99)
		r.LatencyP50Ms, r.LatencyP99Ms = r.ServedLatencyP50Ms, r.ServedLatencyP99Ms
		out = append(out, r)
	}
	return out
}

func addHist(into, h []uint64) []uint64 {
	if len(h) > len(into) {
		into = append(into, make([]uint64, len(h)-len(into))...)
	}
	for i, c := range h {
		into[i] += c
	}
	return into
}

// ServerMatches says whether a server is the one --server names: its address (IP or
// IP:port), or its name (namespace/pod, or just the pod).
func ServerMatches(s *Server, want string) bool {
	if want == "" {
		return true
	}
	if ap, err := netip.ParseAddrPort(want); err == nil && ap.Port() == 53 {
		want = ap.Addr().String() // rows leave out port 53
	}
	if s.Address == want || serverIP(s.Address) == want {
		return true
	}
	if s.Name == "" {
		return false
	}
	if s.Name == want {
		return true
	}
	_, pod, ok := strings.Cut(s.Name, "/")
	return ok && pod == want
}

// FilterServer keeps the rows that sent queries to the server --server names (grouped by
// server: that server's row). Total is left as it was: it still covers every row.
func (f Frame) FilterServer(want string) Frame {
	if want == "" {
		return f
	}
	out := f
	out.Rows = make([]Row, 0, len(f.Rows))
	for _, r := range f.Rows {
		if f.GroupBy == GroupByServer {
			s := Server{Address: r.Server, Name: r.DisplayName(GroupByPod)}
			if r.Pod == "" {
				s.Name = ""
			}
			if ServerMatches(&s, want) {
				out.Rows = append(out.Rows, r)
			}
			continue
		}
		for i := range r.Servers {
			if ServerMatches(&r.Servers[i], want) {
				out.Rows = append(out.Rows, r)
				break
			}
		}
	}
	out.ServerFilter = want
	return out
}
