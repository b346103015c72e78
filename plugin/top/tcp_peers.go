package top

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// maxTopPeers is how many peers a row keeps (a daemon sends as many per row).
const maxTopPeers = 5

// GroupByPeer is `top tcp --group-by peer`: one row per peer of the pods selected.
const GroupByPeer = "peer"

// TCPPeer is what a row's pods did with one peer: the address and port they connected to, or
// (inbound) the address of clients whose connections they accepted. Name, Namespace and Kind
// ("pod", "service" or "node") are filled by the plugin from the cluster when it can.
type TCPPeer struct {
	IP        string `json:"ip"`
	Port      uint32 `json:"port,omitempty"`
	Inbound   bool   `json:"inbound,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`

	Opens           uint64 `json:"opens"`
	ConnectRefused  uint64 `json:"connectRefused"`
	ConnectTimeouts uint64 `json:"connectTimeouts"`
	ConnectOther    uint64 `json:"connectOther"`
	ResetsSent      uint64 `json:"resetsSent"`
	ResetsReceived  uint64 `json:"resetsReceived"`
	RetransSegs     uint64 `json:"retransSegs"`
	// Pods that talked to it (group by peer).
	Pods uint32 `json:"pods,omitempty"`
	// Share is the peer's part of its row's count under the frame's sort key, in percent:
	// connect failures + resets (errors), failures, resets, retransmits, or connect attempts
	// (opens, bytes, rtt, name). The row's count includes events no peer holds.
	Share float64 `json:"share"`
}

// ConnectFailures counts the connects to the peer that did not establish.
func (p *TCPPeer) ConnectFailures() uint64 {
	return p.ConnectRefused + p.ConnectTimeouts + p.ConnectOther
}

// Address is ip:port for a peer connected to, "ip" for clients (inbound).
func (p *TCPPeer) Address() string {
	if p.Inbound {
		return p.IP
	}
	if a, err := netip.ParseAddr(p.IP); err == nil {
		return netip.AddrPortFrom(a, uint16(p.Port)).String()
	}
	return p.IP + ":" + strconv.FormatUint(uint64(p.Port), 10)
}

// DisplayName is the peer as a table shows it: its pod or service (kind/namespace/name), the
// port it was connected on, and "<-" before clients that connected in.
func (p *TCPPeer) DisplayName() string {
	s := p.Address()
	if p.Name != "" {
		s = p.Kind + "/" + p.Namespace + "/" + p.Name
		if !p.Inbound {
			s += ":" + strconv.FormatUint(uint64(p.Port), 10)
		}
	}
	if p.Inbound {
		return "<-" + s
	}
	return s
}

func (p *TCPPeer) key() string {
	return p.IP + "/" + strconv.FormatUint(uint64(p.Port), 10) + "/" + strconv.FormatBool(p.Inbound)
}

func (p *TCPPeer) add(o *TCPPeer) {
	p.Opens += o.Opens
	p.ConnectRefused += o.ConnectRefused
	p.ConnectTimeouts += o.ConnectTimeouts
	p.ConnectOther += o.ConnectOther
	p.ResetsSent += o.ResetsSent
	p.ResetsReceived += o.ResetsReceived
	p.RetransSegs += o.RetransSegs
	p.Pods += o.Pods
}

func tcpPeerFromProto(p *isoobsv1.TCPPeer) TCPPeer {
	return TCPPeer{IP: p.Ip, Port: p.Port, Inbound: p.Inbound, Opens: p.Opens,
		ConnectRefused: p.ConnectRefused, ConnectTimeouts: p.ConnectTimeouts, ConnectOther: p.ConnectOther,
		ResetsSent: p.ResetsSent, ResetsReceived: p.ResetsReceived, RetransSegs: p.RetransSegs, Pods: p.Pods}
}

// peerMetric is what a sort key ranks peers by (the daemon's ranking, daemon.peerMetric).
func peerMetric(key string, p *TCPPeer) uint64 {
	switch key {
	case TCPSortErrors:
		return p.ConnectFailures() + p.ResetsSent + p.ResetsReceived
	case TCPSortFails:
		return p.ConnectFailures()
	case TCPSortResets:
		return p.ResetsSent + p.ResetsReceived
	case TCPSortRetrans:
		return p.RetransSegs
	default:
		return p.Opens + p.ConnectFailures()
	}
}

// rowPeerMetric is the row's own count of what peerMetric counts.
func rowPeerMetric(key string, r *TCPRow) uint64 {
	switch key {
	case TCPSortErrors:
		return r.ConnectFailures() + r.ResetsSent + r.ResetsReceived
	case TCPSortFails:
		return r.ConnectFailures()
	case TCPSortResets:
		return r.ResetsSent + r.ResetsReceived
	case TCPSortRetrans:
		return r.RetransSegs
	default:
		return r.ActiveOpens + r.PassiveOpens + r.ConnectFailures()
	}
}

// mergePeers adds o's peers into r's.
func (r *TCPRow) mergePeers(o *TCPRow) {
	r.OtherPeers += o.OtherPeers
	r.PeerUnattributed += o.PeerUnattributed
	for i := range o.TopPeers {
		op := &o.TopPeers[i]
		if j := slices.IndexFunc(r.TopPeers, func(p TCPPeer) bool { return p.key() == op.key() }); j >= 0 {
			r.TopPeers[j].add(op)
			continue
		}
		r.TopPeers = append(r.TopPeers, *op)
	}
	if r.Peer != nil && o.Peer != nil {
		r.Peer.add(o.Peer)
	}
}

// rankPeers orders each row's peers by key (ties: connect attempts, then the address) and
// sets their shares of the row's count.
func rankPeers(rows []TCPRow, key string) {
	for i := range rows {
		r := &rows[i]
		total := rowPeerMetric(key, r)
		r.TopPeers = slices.Clone(r.TopPeers) // the frame's rows may be ranked again by another key
		slices.SortStableFunc(r.TopPeers, func(a, b TCPPeer) int {
			if c := cmp.Compare(peerMetric(key, &b), peerMetric(key, &a)); c != 0 {
				return c
			}
			if c := cmp.Compare(peerMetric(TCPSortOpens, &b), peerMetric(TCPSortOpens, &a)); c != 0 {
				return c
			}
			return cmp.Compare(a.key(), b.key())
		})
		// Rows merged from several nodes may bring more than a node's 5: keep 5, count the rest.
		if len(r.TopPeers) > maxTopPeers {
			r.OtherPeers += uint32(len(r.TopPeers) - maxTopPeers)
			r.TopPeers = r.TopPeers[:maxTopPeers]
		}
		for j := range r.TopPeers {
			p := &r.TopPeers[j]
			p.Share = 0
			if total > 0 {
				p.Share = 100 * float64(peerMetric(key, p)) / float64(total)
			}
		}
		if r.Peer != nil {
			r.Peer.Share = 0
		}
	}
}

// PeerName is what a peer IP is in the cluster.
type PeerName struct {
	Kind      string // pod, service, node
	Namespace string
	Name      string
}

// PeerNames looks peer IPs up (nil: IPs only).
type PeerNames func(ip netip.Addr) (PeerName, bool)

// Named returns f with its peers' names looked up.
func (f TCPFrame) Named(names PeerNames) TCPFrame {
	if names == nil {
		return f
	}
	name := func(p *TCPPeer) {
		a, err := netip.ParseAddr(p.IP)
		if err != nil {
			return
		}
		if n, ok := names(a.Unmap()); ok {
			p.Kind, p.Namespace, p.Name = n.Kind, n.Namespace, n.Name
		}
	}
	rows := slices.Clone(f.Rows)
	for i := range rows {
		rows[i].TopPeers = slices.Clone(rows[i].TopPeers)
		for j := range rows[i].TopPeers {
			name(&rows[i].TopPeers[j])
		}
		if rows[i].Peer != nil {
			p := *rows[i].Peer
			name(&p)
			rows[i].Peer = &p
		}
	}
	f.Rows = rows
	return f
}
