package bpf

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// PeerKey is one cgroup's peer: the remote address and port a connect went to (Inbound false),
// or the remote address of connections the cgroup accepted (Inbound true, Port 0).
type PeerKey struct {
	CgroupID uint64
	Addr     netip.Addr // IPv4 unmapped
	Port     uint16
	Inbound  bool
}

// PeerCounters are one (cgroup, peer)'s TCP events, cumulative since the entry was made.
type PeerCounters struct {
	Opens          uint64 // connections established (connected or accepted)
	Refused        uint64 // connects refused (a RST answered the SYN)
	Timeouts       uint64 // connects that timed out after their SYN retransmits
	FailedOther    uint64 // connects that failed otherwise (unreachable, aborted)
	ResetsSent     uint64 // RSTs sent to the peer
	ResetsReceived uint64 // RSTs received from it (not those answering a SYN: Refused)
	RetransSegs    uint64 // segments retransmitted to it, SYNs and SYN-ACKs included
}

func (k PeerKey) kernel() tcpPeerKey {
	a := k.Addr
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
	}
	in := uint8(0)
	if k.Inbound {
		in = 1
	}
	return tcpPeerKey{CgroupId: k.CgroupID, Addr: a.As16(), Port: k.Port, Inbound: in}
}

func peerKeyOf(k *tcpPeerKey) PeerKey {
	return PeerKey{CgroupID: k.CgroupId, Addr: netip.AddrFrom16(k.Addr).Unmap(), Port: k.Port, Inbound: k.Inbound != 0}
}

// ReadPeers returns every (cgroup, peer) entry of the probe's bounded peer table. Events that
// found the table full are in their cgroup's TCPCounters.PeerUnattributed and TCPStats.PeerOverflow.
func (p *TCPProbe) ReadPeers() (map[PeerKey]PeerCounters, error) {
	out := map[PeerKey]PeerCounters{}
	var k tcpPeerKey
	var perCPU []tcpPeerValue
	it := p.objs.TcpPeers.Iterate()
	for it.Next(&k, &perCPU) {
		var c PeerCounters
		for _, v := range perCPU {
			c.Opens += v.Opens
			c.Refused += v.Refused
			c.Timeouts += v.Timeouts
			c.FailedOther += v.FailedOther
			c.ResetsSent += v.ResetsSent
			c.ResetsReceived += v.ResetsReceived
			c.RetransSegs += v.RetransSegs
		}
		out[peerKeyOf(&k)] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read tcp peers: %w", err)
	}
	return out, nil
}

// DeletePeers removes peer entries (idle ones, so the table keeps room). An event counted
// between the caller's read and the delete is lost; callers delete entries idle for minutes.
func (p *TCPProbe) DeletePeers(keys []PeerKey) error {
	var errs []error
	for _, k := range keys {
		kk := k.kernel()
		if err := p.objs.TcpPeers.Delete(&kk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *TCPProbe) deletePeersOf(cgroups map[uint64]bool) error {
	var del []tcpPeerKey
	var k tcpPeerKey
	var perCPU []tcpPeerValue
	it := p.objs.TcpPeers.Iterate()
	for it.Next(&k, &perCPU) {
		if cgroups[k.CgroupId] {
			del = append(del, k)
		}
	}
	errs := []error{it.Err()}
	for i := range del {
		if err := p.objs.TcpPeers.Delete(&del[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
