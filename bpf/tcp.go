package bpf

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/isoobs/isoobs/cgroupv2"
)

// DefaultTCPMaxCgroups bounds the TCP probe's per-cgroup map when TCPOptions.MaxCgroups is 0.
const DefaultTCPMaxCgroups = 8192

// DefaultTCPMaxPeers bounds the TCP probe's (cgroup, peer) table when TCPOptions.MaxPeers is 0.
const DefaultTCPMaxPeers = 16384

// DefaultTCPCgroupSlots is the number of fast-path cgroup slots when TCPOptions.CgroupSlots is 0.
const DefaultTCPCgroupSlots = 256

// NumRTTBuckets is the length of TCPCounters.RTTLog2US.
const NumRTTBuckets = 32

// TCPOptions configures LoadTCP.
type TCPOptions struct {
	// CgroupRoot is the cgroup v2 directory whose subtree is observed (as Options.CgroupRoot).
	CgroupRoot string
	// MaxCgroups bounds the per-cgroup counters (0: DefaultTCPMaxCgroups); past it events are
	// counted in TCPStats.CgroupOverflow.
	MaxCgroups uint32
	// CgroupSlots is the number of cgroups counted on the fast path (an array indexed by the
	// cgroup id's low bits instead of the hash, see tcp_cgroup_slots in tcp.c), rounded up to
	// a power of two (0: DefaultTCPCgroupSlots). Kernel memory: 384 bytes a slot per CPU.
	CgroupSlots uint32
	// MaxPeers bounds the (cgroup, peer) table (0: DefaultTCPMaxPeers); past it peer events
	// are counted in TCPCounters.PeerUnattributed and TCPStats.PeerOverflow.
	MaxPeers uint32
	// MaxDropDestinations bounds the per-destination table of socket-less drops (0:
	// DefaultDropDestinations); past it they are counted in ReadDrops under CgroupID 0 and in
	// TCPStats.DropDstOverflow.
	MaxDropDestinations uint32
	// DNS is a DNS probe loaded with Options.Chained on the same root, or nil: the TCP
	// programs run its programs (a tail call) on every packet that may carry DNS (all but
	// TCP on other ports than 53), so the kernel dispatches one program a packet, not two.
	// Closing the TCP probe stops the DNS one from seeing packets.
	DNS *DNSProbe
}

// TCPCounters are one cgroup's TCP counters, cumulative since load and summed over CPUs.
type TCPCounters struct {
	ActiveOpens    uint64 // connections this cgroup opened (SYN_SENT -> ESTABLISHED)
	PassiveOpens   uint64 // connections it accepted (SYN_RECV -> ESTABLISHED)
	ConnectRefused uint64 // connects answered by a RST (ECONNREFUSED)
	ConnectTimeout uint64 // connects that gave up on SYN retransmits (ETIMEDOUT)
	ConnectOther   uint64 // connects that ended otherwise (unreachable, aborted before established)
	ResetsSent     uint64 // RSTs its sockets sent
	ResetsReceived uint64 // RSTs its sockets received outside SYN_SENT (those are ConnectRefused)
	RetransSegs    uint64 // retransmitted segments, SYN-ACKs included (as the kernel's TcpRetransSegs)
	RetransBytes   uint64 // payload bytes sent again (not in BytesOut)
	BytesOut       uint64 // new TCP payload bytes sent: each byte the application wrote, once
	BytesIn        uint64 // new TCP payload bytes received: each byte once, duplicates left out
	SegsOut        uint64 // TCP segments sent but retransmits (as the kernel's OutSegs), GSO segments one by one
	SegsIn         uint64 // TCP segments received, GRO segments counted one by one
	// RTTLog2US[i] counts RTT samples (one per ACK that measured the RTT) whose smoothed RTT t,
	// in µs, satisfies 2^i <= t < 2^(i+1) (bucket 0 also holds t < 1 µs).
	RTTLog2US [NumRTTBuckets]uint64
	// PeerUnattributed counts the opens, failures, resets and retransmits above that are in no
	// peer's counters (ReadPeers): the peer table was full, or the connection was established
	// before the probe loaded.
	PeerUnattributed uint64
}

// TCPStats are the TCP probe's own health counters, cumulative since load.
type TCPStats struct {
	Cgroups        MapFill // per-cgroup counters
	CgroupSlots    MapFill // cgroups counted on the fast path (slots given out by ReadTCP)
	CgroupOverflow uint64  // events not counted because the cgroup map was full
	// ResetsNoSocket are RSTs the kernel sent for packets that found no full socket (a closed
	// port, a timewait socket): they belong to no cgroup.
	ResetsNoSocket uint64
	RetransFailed  uint64 // retransmits that failed (a device drop still counts as retransmitted, as the kernel counts it)
	NotParsed      uint64 // IPv6 packets behind extension headers, not examined
	Drops          MapFill
	DropOverflow   uint64 // drops not counted because the drop map was full
	Peers          MapFill
	PeerOverflow   uint64 // peer events not counted per peer because the peer map was full
	// LocationOverflow counts drops not counted per location (the location map was full;
	// they are in Drops all the same).
	LocationOverflow uint64
	// DropDests is the per-destination table of drops without a socket; DropDstOverflow counts
	// such drops it had no room for (counted in ReadDrops under CgroupID 0 instead).
	DropDests       MapFill
	DropDstOverflow uint64
	// ProgramsNotRun counts the times the kernel did not run one of the probe's tracepoint
	// programs because that program was already running on the CPU (recursion_misses: a timer
	// or packet softirq interrupting it): the events of those calls (a state change, a
	// retransmit, a reset, a drop) are not counted anywhere else.
	ProgramsNotRun uint64
}

// Indexes of tcp_probe_stats, mirroring enum tcp_probe_stat in tcp.c.
const (
	tcpStatCgroupOverflow = iota
	tcpStatResetsNoSocket
	tcpStatRetransFailed
	tcpStatNotParsed
	tcpStatDropOverflow
	tcpStatPeerOverflow
	tcpStatLocationOverflow
	tcpStatDropDstOverflow
	tcpStatMax
)

// TCPProbe is a loaded and attached TCP probe. Its methods are safe for concurrent use.
type TCPProbe struct {
	opts        TCPOptions
	objs        tcpObjects
	links       []link.Link
	attachments []Attachment

	// The fast-path slots (tcp_cgroup_slots), mirrored: slotOwner[i] is the cgroup owning
	// slot i (0: free). A slot freed by DeleteCgroups is cooling until the next ReadTCP
	// (a program that found its owner before the free may still be counting there), and
	// is given out again only after that.
	slotMu      sync.Mutex
	slots       cgroupSlots
	slotOwner   []uint64
	slotCooling []bool
}

// LoadTCP loads the TCP probe, attaches its cgroup programs (cgroup_skb egress and ingress;
// egress also samples RTT) to opts.CgroupRoot and its BTF tracepoints, kfree_skb's included
// (the drops, ReadDrops). Errors name what is missing.
func LoadTCP(opts TCPOptions) (*TCPProbe, error) {
	if err := cgroupv2.Check(opts.CgroupRoot); err != nil {
		return nil, err
	}
	_ = rlimit.RemoveMemlock()
	rootID, err := cgroupv2.ID(opts.CgroupRoot)
	if err != nil {
		return nil, err
	}
	spec, err := loadTcp()
	if err != nil {
		return nil, fmt.Errorf("tcp probe: read embedded object: %w", err)
	}
	if opts.MaxCgroups == 0 {
		opts.MaxCgroups = DefaultTCPMaxCgroups
	}
	spec.Maps[tcpMapTcpStats].MaxEntries = opts.MaxCgroups
	if opts.CgroupSlots == 0 {
		opts.CgroupSlots = DefaultTCPCgroupSlots
	}
	shift := uint32(bits.Len32(opts.CgroupSlots - 1))
	opts.CgroupSlots = 1 << shift
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("tcp probe: %w", err)
	}
	spec.Maps[tcpMapTcpCgroupSlots].MaxEntries = opts.CgroupSlots * uint32(cpus) // a row of slots a CPU
	for name, v := range map[string]uint32{"cgroup_slot_shift": shift, "cgroup_slot_mask": opts.CgroupSlots - 1} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("tcp probe: set %s: %w", name, err)
		}
	}
	if opts.MaxPeers == 0 {
		opts.MaxPeers = DefaultTCPMaxPeers
	}
	spec.Maps[tcpMapTcpPeers].MaxEntries = opts.MaxPeers
	if opts.MaxDropDestinations == 0 {
		opts.MaxDropDestinations = DefaultDropDestinations
	}
	spec.Maps[tcpMapDropDsts].MaxEntries = opts.MaxDropDestinations
	if err := spec.Variables["root_cgroup_id"].Set(rootID); err != nil {
		return nil, fmt.Errorf("tcp probe: set root_cgroup_id: %w", err)
	}
	p := &TCPProbe{opts: opts, slotOwner: make([]uint64, opts.CgroupSlots), slotCooling: make([]bool, opts.CgroupSlots)}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, explainLoadError("load tcp programs", err)
	}
	if p.slots, err = newCgroupSlots(p.objs.TcpCgroupSlots, shift); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.chain(opts.DNS); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.attach(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// chain puts the DNS probe's programs in the arrays the TCP programs tail-call (nil: none),
// before they are attached, so no packet is seen by one probe and not the other.
func (p *TCPProbe) chain(dns *DNSProbe) error {
	if dns == nil {
		return nil
	}
	if !dns.opts.Chained || dns.opts.CgroupRoot != p.opts.CgroupRoot {
		return fmt.Errorf("tcp probe: the DNS probe to run must be loaded with Options.Chained on %s (it is on %s, chained %v)",
			p.opts.CgroupRoot, dns.opts.CgroupRoot, dns.opts.Chained)
	}
	for _, c := range []struct {
		array *ebpf.Map
		prog  *ebpf.Program
	}{{p.objs.ThenEgress, dns.objs.DnsEgress}, {p.objs.ThenIngress, dns.objs.DnsIngress}} {
		if err := c.array.Put(uint32(0), c.prog); err != nil {
			return explainLoadError("chain the DNS programs to the TCP programs", err)
		}
	}
	dns.chainedFrom("tcp_egress", "tcp_ingress")
	return nil
}

func (p *TCPProbe) attach() error {
	root := p.opts.CgroupRoot
	for _, a := range []struct {
		name string
		hook string
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{"tcp_egress", "cgroup_skb/egress", p.objs.TcpEgress, ebpf.AttachCGroupInetEgress},
		{"tcp_ingress", "cgroup_skb/ingress", p.objs.TcpIngress, ebpf.AttachCGroupInetIngress},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.typ, Program: a.prog})
		att := Attachment{Program: a.name, Hook: a.hook, Target: root}
		if err != nil {
			att.Err = explainLoadError(fmt.Sprintf("attach %s to %s", a.hook, root), err)
			p.attachments = append(p.attachments, att)
			return att.Err
		}
		p.links = append(p.links, l)
		p.attachments = append(p.attachments, att)
	}
	for _, a := range []struct {
		name, tracepoint string
		prog             *ebpf.Program
	}{
		{"tcp_set_state", "sock/inet_sock_set_state", p.objs.TcpSetState},
		{"tcp_retransmit", "tcp/tcp_retransmit_skb", p.objs.TcpRetransmit},
		{"tcp_retransmit_synack", "tcp/tcp_retransmit_synack", p.objs.TcpRetransmitSynack},
		{"tcp_send_reset", "tcp/tcp_send_reset", p.objs.TcpSendReset},
		{"tcp_receive_reset", "tcp/tcp_receive_reset", p.objs.TcpReceiveReset},
		{"drop_skb", "skb/kfree_skb", p.objs.DropSkb},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: a.prog})
		att := Attachment{Program: a.name, Hook: "tp_btf", Target: a.tracepoint}
		if err != nil {
			att.Err = explainLoadError("attach tp_btf "+a.tracepoint, err)
			p.attachments = append(p.attachments, att)
			return att.Err
		}
		p.links = append(p.links, l)
		p.attachments = append(p.attachments, att)
	}
	return nil
}

// Attachments lists the programs LoadTCP attached.
func (p *TCPProbe) Attachments() []Attachment {
	return append([]Attachment(nil), p.attachments...)
}

// Close detaches the programs and frees the maps.
func (p *TCPProbe) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

// ReadTCP returns the counters of every cgroup seen, keyed by cgroup id.
//
// A cgroup's counts are in tcp_stats until it gets a fast-path slot, and in the slot from
// then on: both are added. ReadTCP also gives free slots to cgroups it found in tcp_stats.
func (p *TCPProbe) ReadTCP() (map[uint64]TCPCounters, error) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	raw := map[uint64][]tcpTcpCounters{}
	var id uint64
	var perCPU []tcpTcpCounters
	it := p.objs.TcpStats.Iterate()
	for it.Next(&id, &perCPU) {
		raw[id] = perCPU
		perCPU = nil // Next would reuse the slice
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read tcp counters: %w", err)
	}
	for i, owner := range p.slotOwner {
		if owner == 0 {
			continue
		}
		var err error
		if raw[owner], err = p.slots.counters(i, raw[owner]); err != nil {
			return nil, err
		}
	}
	out := make(map[uint64]TCPCounters, len(raw))
	for id, perCPU := range raw {
		out[id] = sumTCPCounters(perCPU)
		i := id & uint64(len(p.slotOwner)-1)
		if p.slotOwner[i] != 0 || p.slotCooling[i] || id == 0 {
			continue
		}
		if err := p.slots.own(int(i), id); err != nil {
			return nil, fmt.Errorf("assign tcp cgroup slot %d: %w", i, err)
		}
		p.slotOwner[i] = id
	}
	// A read later: no program can still be counting in the slots freed before it.
	clear(p.slotCooling)
	return out, nil
}

func sumTCPCounters(perCPU []tcpTcpCounters) TCPCounters {
	var c TCPCounters
	for i := range perCPU {
		v := &perCPU[i]
		c.ActiveOpens += v.ActiveOpens
		c.PassiveOpens += v.PassiveOpens
		c.ConnectRefused += v.ConnectRefused
		c.ConnectTimeout += v.ConnectTimeouts
		c.ConnectOther += v.ConnectOther
		c.ResetsSent += v.ResetsSent
		c.ResetsReceived += v.ResetsReceived
		c.RetransSegs += v.RetransSegs
		c.RetransBytes += v.RetransBytes
		c.BytesOut += v.BytesOut
		c.BytesIn += v.BytesIn
		c.SegsOut += v.SegsOut
		c.SegsIn += v.SegsIn
		for b := range c.RTTLog2US {
			c.RTTLog2US[b] += v.RttLog2Us[b]
		}
		c.PeerUnattributed += v.PeerUnattributed
	}
	return c
}

// DeleteCgroups drops the kernel entries of cgroups that are gone (their counters and their
// peers), so the maps do not fill with dead pods. Missing entries are not an error.
func (p *TCPProbe) DeleteCgroups(ids []uint64) error {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	var errs []error
	gone := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
		if err := p.objs.TcpStats.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
		if i := id & uint64(len(p.slotOwner)-1); id != 0 && p.slotOwner[i] == id {
			if err := p.slots.own(int(i), 0); err != nil {
				errs = append(errs, fmt.Errorf("free tcp cgroup slot %d: %w", i, err))
				continue
			}
			p.slotOwner[i], p.slotCooling[i] = 0, true
		}
	}
	errs = append(errs, p.deletePeersOf(gone))
	return errors.Join(errs...)
}

// Stats returns the probe's health counters and map fill.
func (p *TCPProbe) Stats() (TCPStats, error) {
	var s TCPStats
	var counters [tcpStatMax]uint64
	for i := range counters {
		var perCPU []uint64
		if err := p.objs.TcpProbeStats.Lookup(uint32(i), &perCPU); err != nil {
			return s, fmt.Errorf("read tcp probe stats: %w", err)
		}
		for _, v := range perCPU {
			counters[i] += v
		}
	}
	s.CgroupOverflow = counters[tcpStatCgroupOverflow]
	s.ResetsNoSocket = counters[tcpStatResetsNoSocket]
	s.RetransFailed = counters[tcpStatRetransFailed]
	s.NotParsed = counters[tcpStatNotParsed]
	s.DropOverflow = counters[tcpStatDropOverflow]
	s.PeerOverflow = counters[tcpStatPeerOverflow]
	s.LocationOverflow = counters[tcpStatLocationOverflow]
	s.DropDstOverflow = counters[tcpStatDropDstOverflow]
	for _, prog := range []*ebpf.Program{p.objs.TcpSetState, p.objs.TcpRetransmit, p.objs.TcpRetransmitSynack,
		p.objs.TcpSendReset, p.objs.TcpReceiveReset, p.objs.DropSkb} {
		if ps, err := prog.Stats(); err == nil {
			s.ProgramsNotRun += ps.RecursionMisses
		}
	}
	s.DropDests.Max = p.objs.DropDsts.MaxEntries()
	var ddk tcpDropDstKey
	var ddv []tcpDropValue
	for ddit := p.objs.DropDsts.Iterate(); ddit.Next(&ddk, &ddv); {
		s.DropDests.Entries++
	}
	s.Peers.Max = p.objs.TcpPeers.MaxEntries()
	var pk tcpPeerKey
	var pv []tcpPeerValue
	for pit := p.objs.TcpPeers.Iterate(); pit.Next(&pk, &pv); {
		s.Peers.Entries++
	}
	s.Drops.Max = p.objs.DropStats.MaxEntries()
	var dk tcpDropKey
	var dv []tcpDropValue
	for dit := p.objs.DropStats.Iterate(); dit.Next(&dk, &dv); {
		s.Drops.Entries++
	}
	p.slotMu.Lock()
	s.CgroupSlots.Max = uint32(len(p.slotOwner))
	for _, owner := range p.slotOwner {
		if owner != 0 {
			s.CgroupSlots.Entries++
		}
	}
	p.slotMu.Unlock()
	s.Cgroups.Max = p.objs.TcpStats.MaxEntries()
	var id uint64
	var perCPU []tcpTcpCounters
	it := p.objs.TcpStats.Iterate()
	for it.Next(&id, &perCPU) {
		s.Cgroups.Entries++
	}
	return s, it.Err()
}
