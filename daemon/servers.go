package daemon

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Bounds on the servers kept: per subject (a pod asks one to three), per group of a frame,
// and per row sent. Past them a server's queries are counted as "other".
const (
	maxSubjectServers = 16
	maxGroupServers   = 64
	maxRowServers     = 8
	otherServer       = "other"
)

// serverCount is what a pod's queries to one server came to (bpf.ServerCounters).
type serverCount struct {
	Queries, Answers, NXDomain, ServFail uint64
	// Timed answers were matched with their query; LatencySumUS is their client-side latency.
	Timed, LatencySumUS uint64
}

func serverCountOf(s *bpf.ServerCounters) serverCount {
	return serverCount{Queries: s.Queries, Answers: s.Answers, NXDomain: s.NXDomain, ServFail: s.ServFail,
		Timed: s.Timed, LatencySumUS: s.LatencySumUS}
}

func (c *serverCount) add(o *serverCount) {
	c.Queries += o.Queries
	c.Answers += o.Answers
	c.NXDomain += o.NXDomain
	c.ServFail += o.ServFail
	c.Timed += o.Timed
	c.LatencySumUS += o.LatencySumUS
}

// sub subtracts o, flooring at zero like counters.sub.
func (c *serverCount) sub(o *serverCount) {
	f := func(a *uint64, b uint64) { *a -= min(*a, b) }
	f(&c.Queries, o.Queries)
	f(&c.Answers, o.Answers)
	f(&c.NXDomain, o.NXDomain)
	f(&c.ServFail, o.ServFail)
	f(&c.Timed, o.Timed)
	f(&c.LatencySumUS, o.LatencySumUS)
}

// serverSet holds per-server counts, at most bound servers; the counts of servers past the
// bound go to other.
type serverSet struct {
	by    map[netip.AddrPort]serverCount
	other serverCount
}

func (s *serverSet) add(addr netip.AddrPort, d *serverCount, bound int) {
	if c, ok := s.by[addr]; ok {
		c.add(d)
		s.by[addr] = c
		return
	}
	if len(s.by) >= bound {
		s.other.add(d)
		return
	}
	if s.by == nil {
		s.by = map[netip.AddrPort]serverCount{}
	}
	s.by[addr] = *d
}

func (s *serverSet) addSet(o *serverSet, bound int) {
	for addr, c := range o.by {
		s.add(addr, &c, bound)
	}
	s.other.add(&o.other)
}

func (s *serverSet) clone() serverSet {
	out := serverSet{other: s.other}
	if s.by != nil {
		out.by = make(map[netip.AddrPort]serverCount, len(s.by))
		for a, c := range s.by {
			out.by[a] = c
		}
	}
	return out
}

// sub subtracts a baseline taken earlier from the same set.
func (s *serverSet) sub(b *serverSet) {
	for addr, c := range s.by {
		if bc, ok := b.by[addr]; ok {
			c.sub(&bc)
			s.by[addr] = c
		}
	}
	s.other.sub(&b.other)
}

// serverDeltas adds to into what happened between two cumulative reads of one kernel entry's
// servers (a server's counts going backwards means the entry was created again: its current
// counts are the delta).
func serverDeltas(into *serverSet, cur, prev []bpf.ServerCounters) {
	for i := range cur {
		d := serverCountOf(&cur[i])
		for j := range prev {
			if prev[j].Server != cur[i].Server {
				continue
			}
			p := serverCountOf(&prev[j])
			if d.Queries >= p.Queries && d.Answers >= p.Answers && d.Timed >= p.Timed && d.LatencySumUS >= p.LatencySumUS {
				d.sub(&p)
			}
			break
		}
		if d != (serverCount{}) {
			into.add(cur[i].Server, &d, maxSubjectServers)
		}
	}
}

// serverRows are a row's servers, most queried first: at most maxRowServers, the rest (and the
// servers the kernel or the daemon could not keep apart, otherQueries/otherAnswers) in one
// "other" entry.
func serverRows(s *serverSet, otherQueries, otherAnswers uint64) []*isoobsv1.DNSServer {
	type entry struct {
		addr netip.AddrPort
		c    serverCount
	}
	list := make([]entry, 0, len(s.by))
	for a, c := range s.by {
		list = append(list, entry{a, c})
	}
	slices.SortFunc(list, func(a, b entry) int {
		if a.c.Queries != b.c.Queries {
			return cmp.Compare(b.c.Queries, a.c.Queries)
		}
		return a.addr.Compare(b.addr)
	})
	other := s.other
	other.Queries += otherQueries
	other.Answers += otherAnswers
	if len(list) > maxRowServers {
		for i := maxRowServers; i < len(list); i++ {
			other.add(&list[i].c)
		}
		list = list[:maxRowServers]
	}
	out := make([]*isoobsv1.DNSServer, 0, len(list)+1)
	for _, e := range list {
		out = append(out, dnsServer(serverAddress(e.addr), &e.c))
	}
	if other != (serverCount{}) {
		out = append(out, dnsServer(otherServer, &other))
	}
	return out
}

func dnsServer(addr string, c *serverCount) *isoobsv1.DNSServer {
	return &isoobsv1.DNSServer{Address: addr, Queries: c.Queries, Answers: c.Answers, Nxdomain: c.NXDomain,
		Servfail: c.ServFail, Timed: c.Timed, LatencySumUs: c.LatencySumUS}
}

// serverAddress is how rows name a server: its IP, with the port only when it is not 53.
func serverAddress(a netip.AddrPort) string {
	if a.Port() == 53 {
		return a.Addr().String()
	}
	return a.String()
}
