package daemon

// Peers: the TCP probe counts opens, connect failures, resets and retransmits per (cgroup,
// peer) in a bounded kernel table. The collector adds each entry's increments to the pod the
// cgroup belongs to, keeps at most maxPeersPerPod peers per pod (more are counted as
// unattributed, never dropped silently), and forgets kernel entries idle for the retention so
// the table keeps room for new peers.

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// maxPeersPerPod bounds the peers the daemon keeps per pod; topPeersPerRow how many a row shows.
const (
	maxPeersPerPod = 256
	topPeersPerRow = 5
)

// peerID is a peer of a pod: the address and port it connected to, or (inbound) the address
// of clients whose connections it accepted.
type peerID struct {
	addr    netip.Addr
	port    uint16
	inbound bool
}

func (p peerID) String() string {
	if p.inbound {
		return "from " + p.addr.String()
	}
	return netip.AddrPortFrom(p.addr, p.port).String()
}

// peerLast is a kernel entry's last value and when it last changed.
type peerLast struct {
	c       bpf.PeerCounters
	changed time.Time
}

func peerWords(c *bpf.PeerCounters) []*uint64 {
	return []*uint64{&c.Opens, &c.Refused, &c.Timeouts, &c.FailedOther, &c.ResetsSent, &c.ResetsReceived, &c.RetransSegs}
}

func peerAdd(dst *bpf.PeerCounters, d bpf.PeerCounters) {
	a, b := peerWords(dst), peerWords(&d)
	for i := range a {
		*a[i] += *b[i]
	}
}

func peerSub(dst *bpf.PeerCounters, d bpf.PeerCounters) {
	a, b := peerWords(dst), peerWords(&d)
	for i := range a {
		*a[i] -= *b[i]
	}
}

// peerEvents is every event a peer entry counts.
func peerEvents(c bpf.PeerCounters) uint64 {
	var n uint64
	for _, w := range peerWords(&c) {
		n += *w
	}
	return n
}

// peerDelta is cur - last; a counter that went down means the entry was deleted and made
// again, and then cur is all new.
func peerDelta(cur, last bpf.PeerCounters) bpf.PeerCounters {
	a, b := peerWords(&cur), peerWords(&last)
	for i := range a {
		if *a[i] < *b[i] {
			return cur
		}
	}
	d := cur
	peerSub(&d, last)
	return d
}

// addPeers takes one read of the kernel's peer table. Callers hold mu, after the cgroups of
// the same tick were resolved.
func (c *tcpCollector) addPeers(cur map[bpf.PeerKey]bpf.PeerCounters, now time.Time) {
	for k, v := range cur {
		last := c.peerLast[k]
		d := v
		if last == nil {
			last = &peerLast{changed: now}
			c.peerLast[k] = last
		} else {
			d = peerDelta(v, last.c)
		}
		last.c = v
		if d == (bpf.PeerCounters{}) {
			continue
		}
		last.changed = now
		e := c.entry(k.CgroupID)
		if e.subj == nil {
			continue // a host process's or an untracked pod's peer: in their totals only
		}
		e.subj.addPeer(peerID{addr: k.Addr, port: k.Port, inbound: k.Inbound}, d)
	}
	if cur != nil {
		for k := range c.peerLast {
			if _, ok := cur[k]; !ok {
				delete(c.peerLast, k) // deleted with its cgroup
			}
		}
	}
}

func (s *tcpSubject) addPeer(id peerID, d bpf.PeerCounters) {
	if s.peers == nil {
		s.peers = map[peerID]bpf.PeerCounters{}
	}
	p, ok := s.peers[id]
	if !ok && len(s.peers) >= maxPeersPerPod {
		s.peersDropped += peerEvents(d)
		return
	}
	peerAdd(&p, d)
	s.peers[id] = p
}

// forgetIdlePeers deletes kernel peer entries unchanged for the retention: the table is
// bounded, and a pod that talked to many peers once must not keep others from being counted.
// The pod's own totals per peer stay until the pod is forgotten.
func (c *tcpCollector) forgetIdlePeers(now time.Time) {
	ps, ok := c.src.(interface{ DeletePeers([]bpf.PeerKey) error })
	if !ok {
		return
	}
	var idle []bpf.PeerKey
	for k, l := range c.peerLast {
		if now.Sub(l.changed) >= c.cfg.Retention {
			idle = append(idle, k)
		}
	}
	if len(idle) == 0 {
		return
	}
	if ps.DeletePeers(idle) == nil {
		for _, k := range idle {
			delete(c.peerLast, k)
		}
		c.peersForgotten += uint64(len(idle))
	}
}

// peerMetric is what a peer is ranked by under a sort key: the row's own ranking where the
// peer has it, connect attempts otherwise.
func peerMetric(key string, p bpf.PeerCounters) uint64 {
	fails := p.Refused + p.Timeouts + p.FailedOther
	switch key {
	case TCPSortErrors:
		return fails + p.ResetsSent + p.ResetsReceived
	case TCPSortFails:
		return fails
	case TCPSortResets:
		return p.ResetsSent + p.ResetsReceived
	case TCPSortRetrans:
		return p.RetransSegs
	default:
		return p.Opens + fails
	}
}

// topPeers returns the n heaviest peers by key (ties: connect attempts, then the address).
func topPeers(peers map[peerID]bpf.PeerCounters, key string, n int) []*isoobsv1.TCPPeer {
	ids := make([]peerID, 0, len(peers))
	for id, p := range peers {
		if peerEvents(p) > 0 {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b peerID) int {
		pa, pb := peers[a], peers[b]
		if c := cmp.Compare(peerMetric(key, pb), peerMetric(key, pa)); c != 0 {
			return c
		}
		if c := cmp.Compare(peerMetric(TCPSortOpens, pb), peerMetric(TCPSortOpens, pa)); c != 0 {
			return c
		}
		return cmp.Compare(a.String(), b.String())
	})
	if len(ids) > n {
		ids = ids[:n]
	}
	out := make([]*isoobsv1.TCPPeer, len(ids))
	for i, id := range ids {
		out[i] = peerProto(id, peers[id])
	}
	return out
}

func peerProto(id peerID, p bpf.PeerCounters) *isoobsv1.TCPPeer {
	return &isoobsv1.TCPPeer{
		Ip: id.addr.String(), Port: uint32(id.port), Inbound: id.inbound,
		Opens: p.Opens, ConnectRefused: p.Refused, ConnectTimeouts: p.Timeouts, ConnectOther: p.FailedOther,
		ResetsSent: p.ResetsSent, ResetsReceived: p.ResetsReceived, RetransSegs: p.RetransSegs,
	}
}

// subjectPeers is s's peers over the query's scope (less the stream's baseline).
func (q *tcpQuery) subjectPeers(s *tcpSubject) map[peerID]bpf.PeerCounters {
	base := q.peerBaseline[s.key]
	if q.peerBaseline == nil || len(base) == 0 {
		return s.peers
	}
	out := make(map[peerID]bpf.PeerCounters, len(s.peers))
	for id, p := range s.peers {
		peerSub(&p, base[id])
		out[id] = p
	}
	return out
}

// peerRows builds the GROUP_BY_PEER rows: one per peer of the subjects q selects.
func (c *tcpCollector) peerRows(q *tcpQuery) []*isoobsv1.TCPRow {
	type acc struct {
		p    bpf.PeerCounters
		pods uint32
	}
	byPeer := map[peerID]*acc{}
	for _, s := range c.subjects {
		if !c.matches(q, s) {
			continue
		}
		for id, p := range q.subjectPeers(s) {
			if peerEvents(p) == 0 {
				continue
			}
			a := byPeer[id]
			if a == nil {
				a = &acc{}
				byPeer[id] = a
			}
			peerAdd(&a.p, p)
			a.pods++
		}
	}
	rows := make([]*isoobsv1.TCPRow, 0, len(byPeer))
	for id, a := range byPeer {
		pp := peerProto(id, a.p)
		pp.Pods = a.pods
		r := &isoobsv1.TCPRow{
			Node: c.cfg.NodeName, Pods: a.pods, Peer: pp,
			ConnectRefused: a.p.Refused, ConnectTimeouts: a.p.Timeouts, ConnectOther: a.p.FailedOther,
			ResetsSent: a.p.ResetsSent, ResetsReceived: a.p.ResetsReceived, RetransSegs: a.p.RetransSegs,
		}
		if id.inbound {
			r.PassiveOpens = a.p.Opens
		} else {
			r.ActiveOpens = a.p.Opens
		}
		rows = append(rows, r)
	}
	return rows
}
