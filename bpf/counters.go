package bpf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// Response code slots of PodCounters.Rcode.
const (
	RcodeNoError = iota
	RcodeNXDomain
	RcodeServFail
	RcodeRefused
	RcodeOther
	NumRcodeSlots
)

// QTypeOther is the PodCounters.QType key summing every query type not in
// TrackedQTypes (0 is a reserved type number, never a real query type).
const QTypeOther uint16 = 0

// TrackedQTypes are the query types counted individually, in the kernel's
// slot order (see qtype_slot in dns.c): A, AAAA, CNAME, PTR, SRV, HTTPS, TXT,
// MX, NS, SOA, ANY.
var TrackedQTypes = [...]uint16{1, 28, 5, 12, 33, 65, 16, 15, 2, 6, 255}

// NumLatencyBuckets is the length of PodCounters.LatencyLog2US.
const NumLatencyBuckets = 32

// PodCounters are one cgroup's DNS counters, cumulative since load and
// summed over CPUs.
type PodCounters struct {
	Queries   uint64 // queries sent (egress to port 53)
	Responses uint64 // responses received (ingress from port 53)
	Malformed uint64 // port-53 payloads that are not a valid DNS message, any direction
	BytesOut  uint64 // IP bytes of port-53 packets sent (client queries and server responses)
	BytesIn   uint64 // IP bytes of port-53 packets received
	// QType counts queries sent by DNS type number; QTypeOther sums the rest.
	QType map[uint16]uint64
	// Rcode counts responses received, indexed by Rcode* constants.
	Rcode [NumRcodeSlots]uint64
	// LatencyLog2US[i] counts responses whose query→response time t, in µs,
	// satisfies 2^i <= t < 2^(i+1) (bucket 0 also holds t < 1 µs, the last
	// bucket everything above). While a pod's latency is sampled 1 in 2^k,
	// each timed response adds 2^k: the buckets estimate all responses.
	LatencyLog2US [NumLatencyBuckets]uint64
	// LatencySampleShift is k when 1 in 2^k of the pod's queries is timed
	// now (0: every query; see Options.LatencySampleAbove).
	LatencySampleShift uint8
	ServerQueries      uint64 // queries received on port 53 (a DNS server pod)
	ServerResponses    uint64 // responses sent from port 53
	TCPQueries         uint64 // subset of Queries sent over TCP
	// Timeouts counts queries without an answer within Options.DNSTimeout:
	// those still waiting, those whose answer came later (also counted in
	// Responses), and those that expired unanswered. Evicted counts queries
	// pushed out of the kernel's full in-flight table before their answer,
	// which then cannot time out. While the pod's latency is sampled both
	// are estimates (each timed query weighs 2^k); otherwise they are exact.
	Timeouts uint64
	Evicted  uint64
	// Unsolicited counts answers matching no query the pod has pending (a
	// forged answer, a server's duplicate answer): they are not in
	// Responses, Rcode or the NXDOMAIN names. While the pod's latency is
	// sampled 1 in 2^k only the timed subset can be checked, so the answers
	// to the other queries are counted unchecked.
	Unsolicited uint64
	// Servers are the servers the pod sent queries to (client role), most
	// queried first; OtherServerQueries and OtherServerAnswers count those
	// beyond the kernel's 4 servers per pod and CPU.
	Servers                                []ServerCounters
	OtherServerQueries, OtherServerAnswers uint64
	// ServedRcode counts the responses a DNS server pod sent, by Rcode*
	// slot; ServedLatencyLog2US is the time from a query arriving to its
	// response leaving, bucketed and sampled like LatencyLog2US.
	ServedRcode         [NumRcodeSlots]uint64
	ServedLatencyLog2US [NumLatencyBuckets]uint64
}

// ServerCounters are a client pod's queries to one server (address and
// port as the pod's socket saw them: a Service's IP where kube-proxy
// translates after the pod, the CoreDNS replica's where Cilium's socket load
// balancer does it before) and the answers counted from it.
type ServerCounters struct {
	Server   netip.AddrPort
	Queries  uint64
	Answers  uint64 // answers counted (not the unsolicited)
	NXDomain uint64
	ServFail uint64
	// Timed answers were matched with their query and timed (all of them,
	// or 1 in 2^k while the pod's latency is sampled); LatencySumUS is
	// their client-side latencies, summed.
	Timed        uint64
	LatencySumUS uint64
}

// ReadPods returns the counters of every cgroup seen, keyed by cgroup id
// (the inode number of the cgroup directory, see CgroupID).
//
// A pod's counts are in pod_stats until it gets a fast-path slot, and in the
// slot from then on: both are added. ReadPods also gives free slots to pods
// it found in pod_stats, and zeroes the slots DeletePods freed.
func (p *DNSProbe) ReadPods() (map[uint64]PodCounters, error) {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	// Freed at least one read ago: no program can still be counting there.
	for i, dirty := range p.slotDirty {
		if !dirty {
			continue
		}
		zero := make([]dnsPodCounters, ebpf.MustPossibleCPU())
		if err := p.objs.PodSlotCounters.Put(uint32(i), zero); err != nil {
			return nil, fmt.Errorf("reset pod slot %d: %w", i, err)
		}
		p.slotDirty[i] = false
	}

	raw := make(map[uint64][]dnsPodCounters)
	var id uint64
	var perCPU []dnsPodCounters
	it := p.objs.PodStats.Iterate()
	for it.Next(&id, &perCPU) {
		raw[id] = perCPU
		perCPU = nil // Next would reuse the slice
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read pod counters: %w", err)
	}
	for i, owner := range p.slotOwner {
		if owner == 0 {
			continue
		}
		var slot []dnsPodCounters
		if err := p.objs.PodSlotCounters.Lookup(uint32(i), &slot); err != nil {
			return nil, fmt.Errorf("read pod slot %d: %w", i, err)
		}
		raw[owner] = append(raw[owner], slot...)
	}
	now := time.Now()
	elapsed := now.Sub(p.rateAt)
	takeRates := elapsed >= latencyRateWindow
	if takeRates {
		p.rateAt = now
	}
	out := make(map[uint64]PodCounters, len(raw))
	for id, perCPU := range raw {
		c := sumPodCounters(perCPU)
		i := id & uint64(len(p.slotOwner)-1)
		// The queries sent under the previous shift are answered or timed
		// out: the kernel can forget it.
		if p.slotOwner[i] == id && p.slotPrevShift[i] != p.slotShift[i] && now.Sub(p.slotShiftAt[i]) > p.opts.DNSTimeout+latencyRateWindow {
			if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id, LatencySampleShift: p.slotShift[i], PrevSampleShift: p.slotShift[i]}); err != nil {
				return nil, fmt.Errorf("set latency sampling of pod slot %d: %w", i, err)
			}
			p.slotPrevShift[i] = p.slotShift[i]
		}
		switch {
		case p.slotOwner[i] == 0 && !p.slotDirty[i]:
			if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id}); err != nil {
				return nil, fmt.Errorf("assign pod slot %d: %w", i, err)
			}
			p.slotOwner[i], p.slotShift[i], p.slotPrevShift[i], p.slotQueries[i] = id, 0, 0, c.Queries+c.ServerQueries
		case p.slotOwner[i] == id && takeRates && !p.opts.TimeEveryQuery:
			// A server pod's responses are timed like a client's queries.
			rate := float64(c.Queries+c.ServerQueries-p.slotQueries[i]) / elapsed.Seconds()
			p.slotQueries[i] = c.Queries + c.ServerQueries
			// One change at a time: the kernel checks answers against the
			// previous shift too until the queries sent under it are done.
			k := latencySampleShift(rate, float64(p.opts.LatencySampleAbove), p.slotShift[i])
			if k != p.slotShift[i] && p.slotPrevShift[i] == p.slotShift[i] {
				if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id, LatencySampleShift: k, PrevSampleShift: p.slotShift[i]}); err != nil {
					return nil, fmt.Errorf("set latency sampling of pod slot %d: %w", i, err)
				}
				p.slotPrevShift[i], p.slotShift[i], p.slotShiftAt[i] = p.slotShift[i], k, now
			}
		}
		if p.slotOwner[i] == id {
			c.LatencySampleShift = uint8(p.slotShift[i])
		}
		out[id] = c
	}
	// After the counters: a query leaving the table between the two reads
	// is then missed once, never counted twice.
	waiting, err := p.walkInflight()
	if err != nil {
		return nil, err
	}
	for id, c := range out {
		t := c.Timeouts + waiting.timedOut[id]<<c.LatencySampleShift
		// Monotonic: the sum dips for a read when a query leaves the table
		// after the counters were read.
		if seen := p.timeouts[id]; t < seen {
			t = seen
		}
		p.timeouts[id] = t
		c.Timeouts = t
		out[id] = c
	}
	return out, nil
}

// latencySampleShift is k such that timing 1 in 2^k of the queries of a pod
// sending rate queries a second times at most above of them: the smallest
// such k, except that a pod timed 1 in 2^cur keeps cur until its timed rate
// falls below a quarter of above, so a rate near a power-of-two boundary
// does not flip it every read (each change leaves a few queries unmatched or
// pending in the kernel).
func latencySampleShift(rate, above float64, cur uint32) uint32 {
	var k uint32
	for k < maxLatencySampleShift && rate > above*float64(uint64(1)<<k) {
		k++
	}
	if k < cur && rate >= above/4*float64(uint64(1)<<cur) {
		return cur
	}
	return k
}

// DeletePods forgets the kernel counters of cgroups that are gone, so the bounded
// pod_stats map does not fill up with dead pods over a node's lifetime, and
// frees their fast-path slots. Ids not in the maps are ignored.
func (p *DNSProbe) DeletePods(ids []uint64) error {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	for _, id := range ids {
		delete(p.timeouts, id)
		if err := p.objs.PodStats.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete pod counters of cgroup %d: %w", id, err)
		}
		i := id & uint64(len(p.slotOwner)-1)
		if p.slotOwner[i] != id {
			continue
		}
		if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{}); err != nil {
			return fmt.Errorf("free pod slot %d: %w", i, err)
		}
		p.slotOwner[i], p.slotShift[i], p.slotPrevShift[i] = 0, 0, 0
		p.slotDirty[i] = true
	}
	return nil
}

func sumPodCounters(perCPU []dnsPodCounters) PodCounters {
	var pc PodCounters
	var qtype [len(TrackedQTypes) + 1]uint64
	for i := range perCPU {
		c := &perCPU[i]
		pc.Queries += c.Queries
		pc.Responses += c.Responses
		pc.Malformed += c.Malformed
		pc.BytesOut += c.BytesOut
		pc.BytesIn += c.BytesIn
		pc.ServerQueries += c.ServerQueries
		pc.ServerResponses += c.ServerResponses
		pc.TCPQueries += c.TcpQueries
		pc.Timeouts += c.Timeouts
		pc.Evicted += c.Evicted
		pc.Unsolicited += c.Unsolicited
		for j := range qtype {
			qtype[j] += c.Qtype[j]
		}
		for j := range pc.Rcode {
			pc.Rcode[j] += c.Rcode[j]
		}
		for j := range pc.LatencyLog2US {
			pc.LatencyLog2US[j] += c.LatencyLog2Us[j]
		}
		pc.OtherServerQueries += c.OtherServerQueries
		pc.OtherServerAnswers += c.OtherServerAnswers
		for j := range pc.ServedRcode {
			pc.ServedRcode[j] += c.ServedRcode[j]
		}
		for j := range pc.ServedLatencyLog2US {
			pc.ServedLatencyLog2US[j] += c.ServedLatencyLog2Us[j]
		}
		for j := range c.Servers {
			pc.Servers = addServer(pc.Servers, &c.Servers[j])
		}
	}
	slices.SortFunc(pc.Servers, func(a, b ServerCounters) int {
		if a.Queries != b.Queries {
			return cmp.Compare(b.Queries, a.Queries)
		}
		return a.Server.Compare(b.Server)
	})
	pc.QType = make(map[uint16]uint64)
	for slot, n := range qtype {
		if n == 0 {
			continue
		}
		if slot < len(TrackedQTypes) {
			pc.QType[TrackedQTypes[slot]] = n
		} else {
			pc.QType[QTypeOther] = n
		}
	}
	return pc
}

// addServer adds one CPU's counters of a server slot to the pod's servers
// (the CPUs claim their slots independently, so they are merged by address).
func addServer(servers []ServerCounters, k *dnsServerCounters) []ServerCounters {
	if k.Tag == 0 {
		return servers
	}
	port := uint16(k.Tag)
	var addr netip.Addr
	if (k.Tag>>16)&0xff == 4 {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(k.Addr[0]))
		addr = netip.AddrFrom4(b)
	} else {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], k.Addr[0])
		binary.LittleEndian.PutUint64(b[8:], k.Addr[1])
		addr = netip.AddrFrom16(b)
	}
	ap := netip.AddrPortFrom(addr, port)
	i := slices.IndexFunc(servers, func(s ServerCounters) bool { return s.Server == ap })
	if i < 0 {
		servers = append(servers, ServerCounters{Server: ap})
		i = len(servers) - 1
	}
	s := &servers[i]
	s.Queries += k.Queries
	s.Answers += k.Answers
	s.NXDomain += k.Nxdomain
	s.ServFail += k.Servfail
	s.Timed += k.Timed
	s.LatencySumUS += k.LatencySumUs
	return servers
}

// AssignSlots gives each pod in pod_stats its free fast-path slot without
// reading any counters, as ReadPods does: for benchmarks that load an earlier
// build of the probe (LoadDNSObject) whose counters have another layout.
func (p *DNSProbe) AssignSlots() error {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	var ids []uint64
	var id uint64
	for key := any(nil); ; key = id {
		err := p.objs.PodStats.NextKey(key, &id)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("list pods: %w", err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		i := id & uint64(len(p.slotOwner)-1)
		if p.slotOwner[i] != 0 || p.slotDirty[i] {
			continue
		}
		if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id}); err != nil {
			return fmt.Errorf("assign pod slot %d: %w", i, err)
		}
		p.slotOwner[i] = id
	}
	return nil
}
