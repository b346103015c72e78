// Package bpf loads the isoobs eBPF probes into the running kernel and reads
// what they aggregate.
//
// The DNS probe is a pair of cgroup_skb programs (egress + ingress) attached
// to a node's cgroup v2 root. It parses DNS over UDP and TCP port 53 (IPv4
// and IPv6) and keeps per-cgroup (per-pod) counters, a per-pod latency
// histogram and per-(pod, query name) counts in kernel maps; userspace only
// reads the maps, no event is sent per packet. See dns.c for what is parsed
// and what is not.
package bpf

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Defaults used when an Options field is 0.
const (
	DefaultMaxPods     = 8192
	DefaultMaxNames    = 16384
	DefaultMaxInflight = 1024
	DefaultPodSlots    = 256
	// DefaultLatencySampleAbove is Options.LatencySampleAbove's default: a
	// log2 histogram's p99 over a 10 s window then rests on at least ~200
	// samples, and timing 2,000 queries a second costs ~0.03 % of a core.
	DefaultLatencySampleAbove = 2000
	// maxLatencySampleShift bounds the sampling at 1 in 1,024 queries.
	maxLatencySampleShift = 10
	// maxInflight bounds Options.MaxInflight: 2^22 sets of 4 (256 MiB).
	maxInflight = 1 << 24
	// latencyRateWindow is the shortest time between two ReadPods calls
	// over which a pod's query rate is taken to choose its sampling.
	latencyRateWindow = 250 * time.Millisecond
)

// Options configures LoadDNS.
type Options struct {
	// CgroupRoot is the cgroup v2 directory whose subtree is observed, e.g.
	// the node's root (/sys/fs/cgroup) or a kubepods slice.
	CgroupRoot string
	// Bounds of the kernel maps; 0 means the Default* value.
	MaxPods     uint32 // per-cgroup counters
	MaxNames    uint32 // (cgroup, query name) pairs between two DrainNames calls
	MaxInflight uint32 // slots for queries awaiting their response (latency matching), rounded up to a power of two (at least 4: sets of 4 ways)
	PodSlots    uint32 // pods counted on the fast path (an array indexed by the cgroup id's low bits), rounded up to a power of two
	// NameSlots is the number of hot (pod, name) pairs counted outside the
	// kernel's name hash table (see nameslots.go), rounded up to a power of
	// two; 0 means DefaultNameSlots.
	NameSlots uint32
	// LatencySampleAbove is the query rate (per second) above which a pod's
	// latency is sampled: ReadPods then has the kernel time 1 in 2^k of the
	// pod's queries, k the smallest that brings the timed rate to at most
	// this, and each timed response weighs 2^k in the histogram. Timing a
	// query and its response is a third of the probe's cost per DNS packet
	// under load, and percentiles of a 2x-bucket histogram need no more.
	// 0 means DefaultLatencySampleAbove.
	LatencySampleAbove uint32
	// TimeEveryQuery turns latency sampling off.
	TimeEveryQuery bool
	// NoEarlyDrain turns off draining the name table early when it fills
	// between two DrainNames calls (tests of the overflow accounting).
	NoEarlyDrain bool
}

// Attachment describes one program attached by the probe.
type Attachment struct {
	Program string // program name in the object, e.g. "dns_egress"
	Hook    string // e.g. "cgroup_skb/egress"
	Target  string // the cgroup directory
	Err     error  // nil when attached
}

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
}

// MapFill is the fill level of a bounded kernel map.
type MapFill struct {
	Entries uint32
	Max     uint32
}

// ProbeStats are the probe's own health counters, cumulative since load.
type ProbeStats struct {
	Pods     MapFill // per-cgroup counters
	PodSlots MapFill // pods counted on the fast path (slots assigned by ReadPods)
	// LatencySampledPods is the number of pods whose latency is sampled now
	// (they send more than Options.LatencySampleAbove queries a second).
	LatencySampledPods uint32
	Names              MapFill // name table currently written (emptied by DrainNames)
	// NameSlots: hot (pod, name) pairs counted outside the name table, in
	// the array the programs use.
	NameSlots MapFill
	Inflight  MapFill // queries awaiting their response

	PodOverflow        uint64 // DNS packets not counted because the pod map was full
	NameOverflow       uint64 // name increments not counted because the name table was full
	InflightInserted   uint64 // client queries timed (remembered for latency matching)
	InflightDuplicates uint64 // queries whose 5-tuple+id was already pending (retransmits)
	InflightMatched    uint64 // responses matched with their query (latency samples)
	InflightEvicted    uint64 // pending queries replaced by another query hashed to the same slot
	InflightExpired    uint64 // queries never answered within 10 s (found when their slot was reused)
	InflightErrors     uint64 // unused since the inflight table is an array; kept for compatibility
	UnmatchedResponses uint64 // timed responses with no pending query
	Malformed          uint64 // all cgroups, including ones beyond the pod map
	NotParsed          uint64 // fragments, too many IPv6 extension headers
	DNSMessages        uint64 // port-53 payloads examined
}

// Indexes of the probe_stats array, mirroring enum probe_stat in dns.c.
const (
	statPodOverflow = iota
	statNameOverflow
	statInflightInserts
	statInflightDuplicates
	statInflightMatched
	statUnmatchedResponses
	statMalformed
	statNotParsed
	statDNSMessages
	statInflightEvicted
	statInflightExpired
	statNameInserts
	statMax
)

// DNSProbe is a loaded and attached DNS probe. Its methods are safe for
// concurrent use.
type DNSProbe struct {
	opts        Options
	objs        dnsObjects
	links       []link.Link
	attachments []Attachment

	mu         sync.Mutex // serialises DrainNames (table swap) and Close
	nameTables [2]*ebpf.Map
	active     int // index in nameTables of the table the programs write
	slots      *nameSlots
	closed     bool

	// Early drains: a flood of unique names fills the kernel table faster
	// than the caller drains it (16384 per second by default), so a
	// goroutine watches the kernel's insert counter and drains into pending
	// when the table is half full; DrainNames hands pending over.
	pending        []pendingName
	pendingWire    []byte
	insertsAtSwap  uint64
	stopEarlyDrain chan struct{}
	earlyDrainDone chan struct{}

	insertsBuf []uint64 // per-CPU insert counts, earlyDrainLoop's

	// Batch buffers of drainTable, reused (p.mu).
	batchKeys []dnsNameKey
	batchVals []dnsNameValue

	// The pods' fast-path slots (pod_slot_owner in dns.c), mirrored:
	// slotOwner[i] is the cgroup id owning slot i (0: free); a slot freed by
	// DeletePods is dirty until the next ReadPods zeroes its counters.
	// slotShift[i] is the owner's latency sample shift, slotQueries[i] its
	// queries when its rate was last taken, at rateAt.
	slotMu      sync.Mutex
	slotOwner   []uint64
	slotDirty   []bool
	slotShift   []uint32
	slotQueries []uint64
	rateAt      time.Time
}

// pendingName is a name drained early, its wire bytes kept in
// DNSProbe.pendingWire (one reused buffer rather than a string per name: a
// flood's names are many, short-lived and turned into text only when
// handed over).
type pendingName struct {
	cgroupID          uint64
	queries, nxdomain uint64
	off, n            uint32
}

const (
	// earlyDrainEvery is how often the kernel's name insert counter is read;
	// a drain starts when the table is half full. The other half absorbs
	// 8,192 new names per 25 ms (330k/s) with the default table before any
	// overflow, and the kernel's batch drain walks every bucket, so a fuller
	// table costs less per name (BenchmarkDrainNames: 365 CPU ns per name a
	// quarter full, 318 half full).
	earlyDrainEvery = 25 * time.Millisecond
	// earlyDrainIdle is how often the counter is read while names come in
	// slower than MaxNames/8 per earlyDrainIdle (20k/s with the default
	// table): the table's free entries then absorb a flood of up to 164k
	// new names/s starting right after a read. Every wake-up of an idle
	// daemon costs (in a VM, a context switch and the Go scheduler's):
	// 10 reads a second instead of 40.
	earlyDrainIdle = 100 * time.Millisecond
	// maxPendingFactor x MaxNames bounds the names held between two
	// DrainNames calls; beyond it the kernel table overflows (counted).
	maxPendingFactor = 8
)

// LoadDNS loads the DNS probe and attaches its egress and ingress programs
// to opts.CgroupRoot. Errors name what is missing (capability, BTF, cgroup
// root) and what to do.
func LoadDNS(opts Options) (*DNSProbe, error) {
	if err := checkCgroupRoot(opts.CgroupRoot); err != nil {
		return nil, err
	}
	// Only kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK; raising
	// it is harmless elsewhere, and failure is reported by the loads below.
	_ = rlimit.RemoveMemlock()

	spec, err := loadDns()
	if err != nil {
		return nil, fmt.Errorf("dns probe: read embedded object: %w", err)
	}
	return loadDNSSpec(spec, opts)
}

// LoadDNSObject is LoadDNS with the probe read from an object file built from
// dns.c instead of the embedded one: benchmarks compare builds of the probe
// (earlier versions, parts compiled out) under the same load.
func LoadDNSObject(path string, opts Options) (*DNSProbe, error) {
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("dns probe: read %s: %w", path, err)
	}
	// An earlier build may lack maps added since: they are created unused
	// so that the objects struct fills.
	cur, err := loadDns()
	if err != nil {
		return nil, err
	}
	for name, m := range cur.Maps {
		if _, ok := spec.Maps[name]; !ok {
			spec.Maps[name] = m
		}
	}
	return loadDNSSpec(spec, opts)
}

// loadDNSSpec loads and attaches the probe from spec, an object with the
// maps and programs of dns.c (benchmarks also load earlier versions of it).
func loadDNSSpec(spec *ebpf.CollectionSpec, opts Options) (*DNSProbe, error) {
	for _, d := range []struct {
		v   *uint32
		def uint32
	}{
		{&opts.MaxPods, DefaultMaxPods}, {&opts.MaxNames, DefaultMaxNames},
		{&opts.MaxInflight, DefaultMaxInflight}, {&opts.PodSlots, DefaultPodSlots},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	spec.Maps["pod_stats"].MaxEntries = opts.MaxPods
	opts.PodSlots = 1 << bits.Len32(opts.PodSlots-1)
	spec.Maps["pod_slot_owner"].MaxEntries = opts.PodSlots
	spec.Maps["pod_slot_counters"].MaxEntries = opts.PodSlots
	if v := spec.Variables["pod_slot_mask"]; v != nil { // nil in builds before the fast path
		if err := v.Set(opts.PodSlots - 1); err != nil {
			return nil, fmt.Errorf("dns probe: set pod slot count: %w", err)
		}
	}
	// The inflight table holds sets of inflightWays slots indexed by
	// hash & mask: round the set count up to a power of two. The set index
	// must stay below the hash bits that pick the sampled queries (54+).
	if opts.MaxInflight > maxInflight {
		return nil, fmt.Errorf("dns probe: %d in-flight query slots is more than the %d supported", opts.MaxInflight, maxInflight)
	}
	sets := uint32(1) << bits.Len32((opts.MaxInflight+inflightWays-1)/inflightWays-1)
	opts.MaxInflight = sets * inflightWays
	spec.Maps["inflight"].MaxEntries = sets
	if err := spec.Variables["inflight_mask"].Set(sets - 1); err != nil {
		return nil, fmt.Errorf("dns probe: set inflight table size: %w", err)
	}
	slotOuter := spec.Maps["name_slot_tables"]
	slotCopies, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("dns probe: %w", err)
	}
	if opts.NameSlots == 0 {
		opts.NameSlots = defaultNameSlots(slotCopies)
	}
	if opts.NameSlots > maxNameSlots {
		return nil, fmt.Errorf("dns probe: %d name slots is more than the %d supported", opts.NameSlots, maxNameSlots)
	}
	opts.NameSlots = 1 << bits.Len32(opts.NameSlots-1)
	if v := spec.Variables["name_slot_mask"]; v != nil { // nil in builds before the name slots
		if err := v.Set(opts.NameSlots - 1); err != nil {
			return nil, fmt.Errorf("dns probe: set name slot count: %w", err)
		}
	}
	slotOuter.InnerMap.MaxEntries = opts.NameSlots
	outer := spec.Maps["name_tables"]
	outer.InnerMap.MaxEntries = opts.MaxNames

	if opts.LatencySampleAbove == 0 {
		opts.LatencySampleAbove = DefaultLatencySampleAbove
	}
	p := &DNSProbe{opts: opts, slotOwner: make([]uint64, opts.PodSlots), slotDirty: make([]bool, opts.PodSlots),
		slotShift: make([]uint32, opts.PodSlots), slotQueries: make([]uint64, opts.PodSlots)}
	for i := range p.nameTables {
		inner := outer.InnerMap.Copy()
		inner.Name = fmt.Sprintf("dns_names_%d", i)
		m, err := ebpf.NewMap(inner)
		if err != nil {
			p.Close()
			return nil, explainLoadError("create name table", err)
		}
		p.nameTables[i] = m
	}
	outer.Contents = []ebpf.MapKV{{Key: uint32(0), Value: p.nameTables[0]}}
	p.slots = newNameSlots(opts.NameSlots, slotCopies)
	for i := range p.slots.tables {
		inner := slotOuter.InnerMap.Copy()
		inner.Name = fmt.Sprintf("dns_slots_%d", i)
		m, err := ebpf.NewMap(inner)
		if err != nil {
			p.Close()
			return nil, explainLoadError("create name slots", err)
		}
		p.slots.tables[i] = m
	}
	slotOuter.Contents = []ebpf.MapKV{{Key: uint32(0), Value: p.slots.tables[0]}}

	// Programs and maps only: the variables are set in the spec above, and
	// a build from before a variable was added still loads.
	if err := spec.LoadAndAssign(&struct {
		*dnsPrograms
		*dnsMaps
	}{&p.objs.dnsPrograms, &p.objs.dnsMaps}, nil); err != nil {
		p.Close()
		return nil, explainLoadError("load dns programs", err)
	}

	for _, a := range []struct {
		name string
		hook string
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{"dns_egress", "cgroup_skb/egress", p.objs.DnsEgress, ebpf.AttachCGroupInetEgress},
		{"dns_ingress", "cgroup_skb/ingress", p.objs.DnsIngress, ebpf.AttachCGroupInetIngress},
	} {
		// AttachCgroup uses bpf_link (or BPF_F_ALLOW_MULTI on old kernels), so
		// probes on nested or sibling roots and other tools' programs coexist.
		l, err := link.AttachCgroup(link.CgroupOptions{Path: opts.CgroupRoot, Attach: a.typ, Program: a.prog})
		att := Attachment{Program: a.name, Hook: a.hook, Target: opts.CgroupRoot}
		if err != nil {
			att.Err = explainLoadError(fmt.Sprintf("attach %s to %s", a.hook, opts.CgroupRoot), err)
			p.attachments = append(p.attachments, att)
			p.Close()
			return nil, att.Err
		}
		p.links = append(p.links, l)
		p.attachments = append(p.attachments, att)
	}
	if !opts.NoEarlyDrain {
		p.stopEarlyDrain = make(chan struct{})
		p.earlyDrainDone = make(chan struct{})
		go p.earlyDrainLoop()
	}
	return p, nil
}

func (p *DNSProbe) earlyDrainLoop() {
	defer close(p.earlyDrainDone)
	t := time.NewTimer(earlyDrainIdle)
	defer t.Stop()
	var last uint64
	lastAt := time.Now()
	for {
		select {
		case <-p.stopEarlyDrain:
			return
		case <-t.C:
		}
		now := time.Now()
		inserts, err := p.nameInserts()
		if err != nil {
			t.Reset(earlyDrainIdle)
			continue
		}
		p.mu.Lock()
		if !p.closed && inserts-p.insertsAtSwap >= uint64(p.opts.MaxNames/2) && len(p.pending) < maxPendingFactor*int(p.opts.MaxNames) {
			// An error leaves the entries in the kernel table for DrainNames.
			_ = p.swapAndDrainRaw(func(k *dnsNameKey, v *dnsNameValue) {
				wire := entryWire(v)
				p.pending = append(p.pending, pendingName{k.CgroupId, v.Queries, v.Nxdomain, uint32(len(p.pendingWire)), uint32(len(wire))})
				p.pendingWire = append(p.pendingWire, wire...)
			})
		}
		p.mu.Unlock()
		t.Reset(earlyDrainInterval(inserts-last, now.Sub(lastAt), p.opts.MaxNames))
		last, lastAt = inserts, now
	}
}

// earlyDrainInterval is when to read the insert counter next, after n
// inserts in the last elapsed: soon while names come in fast enough to fill
// an eighth of the table within earlyDrainIdle, else after earlyDrainIdle.
func earlyDrainInterval(n uint64, elapsed time.Duration, maxNames uint32) time.Duration {
	if elapsed > 0 && float64(n)*float64(earlyDrainIdle)/float64(elapsed) >= float64(maxNames/8) {
		return earlyDrainEvery
	}
	return earlyDrainIdle
}

// nameInserts is the kernel's count of name table inserts, all CPUs.
// Only earlyDrainLoop calls it: its buffer is reused.
func (p *DNSProbe) nameInserts() (uint64, error) {
	if p.insertsBuf == nil {
		p.insertsBuf = make([]uint64, ebpf.MustPossibleCPU())
	}
	if err := p.objs.ProbeStats.Lookup(uint32(statNameInserts), p.insertsBuf); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range p.insertsBuf {
		n += v
	}
	return n, nil
}

// Close detaches the programs and frees the maps.
func (p *DNSProbe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.stopEarlyDrain != nil {
		close(p.stopEarlyDrain)
		p.mu.Unlock() // the loop may be waiting for the lock
		<-p.earlyDrainDone
		p.mu.Lock()
	}
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	if p.objs.DnsEgress != nil || p.objs.PodStats != nil {
		errs = append(errs, p.objs.Close())
	}
	for _, m := range p.nameTables {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	if p.slots != nil {
		for _, m := range p.slots.tables {
			if m != nil {
				errs = append(errs, m.Close())
			}
		}
	}
	return errors.Join(errs...)
}

// Attachments lists the programs attached by LoadDNS.
func (p *DNSProbe) Attachments() []Attachment {
	return append([]Attachment(nil), p.attachments...)
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
		switch {
		case p.slotOwner[i] == 0 && !p.slotDirty[i]:
			if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id}); err != nil {
				return nil, fmt.Errorf("assign pod slot %d: %w", i, err)
			}
			p.slotOwner[i], p.slotShift[i], p.slotQueries[i] = id, 0, c.Queries
		case p.slotOwner[i] == id && takeRates && !p.opts.TimeEveryQuery:
			rate := float64(c.Queries-p.slotQueries[i]) / elapsed.Seconds()
			p.slotQueries[i] = c.Queries
			if k := latencySampleShift(rate, float64(p.opts.LatencySampleAbove), p.slotShift[i]); k != p.slotShift[i] {
				if err := p.objs.PodSlotOwner.Put(uint32(i), dnsPodSlot{CgroupId: id, LatencySampleShift: k}); err != nil {
					return nil, fmt.Errorf("set latency sampling of pod slot %d: %w", i, err)
				}
				p.slotShift[i] = k
			}
		}
		if p.slotOwner[i] == id {
			c.LatencySampleShift = uint8(p.slotShift[i])
		}
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
		p.slotOwner[i], p.slotShift[i] = 0, 0
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
		for j := range qtype {
			qtype[j] += c.Qtype[j]
		}
		for j := range pc.Rcode {
			pc.Rcode[j] += c.Rcode[j]
		}
		for j := range pc.LatencyLog2US {
			pc.LatencyLog2US[j] += c.LatencyLog2Us[j]
		}
	}
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

// DrainNames calls fn for every (cgroup, query name) counted since the
// previous call and removes them from the kernel, so the bounded table
// never stays full. It is exact: the programs are switched to a second,
// empty table first, and the kernel waits for running programs before the
// switch returns, so no increment lands in the table being drained.
// Names are the question's labels joined by dots, A-Z lower-cased, without
// the trailing dot ("." for the root); other bytes are kept raw and are not
// escaped, so a name may hold non-UTF-8 bytes or a '.' inside a label.
// When a flood filled the kernel table between two calls, part of it was
// drained early and is handed over first: a (cgroup, name) may then come
// more than once in one call, and its counts add up.
func (p *DNSProbe) DrainNames(fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("dns probe is closed")
	}
	for _, n := range p.pending {
		name, _ := decodeWireName(p.pendingWire[n.off : n.off+n.n])
		fn(n.cgroupID, name, n.queries, n.nxdomain)
	}
	// Buffers sized for a flood are kept while it lasts (regrowing them
	// every interval was garbage at the flood's rate) and given back once
	// an interval used less than a quarter of them.
	if cap(p.pending) > int(p.opts.MaxNames) && len(p.pending) < cap(p.pending)/4 {
		p.pending, p.pendingWire = nil, nil
	} else {
		p.pending, p.pendingWire = p.pending[:0], p.pendingWire[:0]
	}
	if err := p.swapAndDrain(fn); err != nil {
		return err
	}
	return p.slots.drain(p.objs.NameSlotTables, fn)
}

// swapAndDrain switches the programs to the other name table and drains the
// old one. Callers hold p.mu.
func (p *DNSProbe) swapAndDrain(fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	return p.swapAndDrainRaw(func(k *dnsNameKey, v *dnsNameValue) {
		fn(k.CgroupId, nameText(v), v.Queries, v.Nxdomain)
	})
}

// swapAndDrainRaw is swapAndDrain handing over the kernel's entries, valid
// during the call only. Every entry is also offered to the name slots.
func (p *DNSProbe) swapAndDrainRaw(fn func(k *dnsNameKey, v *dnsNameValue)) error {
	old := p.nameTables[p.active]
	next := p.nameTables[1-p.active]
	// An array-of-maps update returns only after synchronize_rcu(), i.e.
	// after every program that could still hold the old table has finished.
	if err := p.objs.NameTables.Update(uint32(0), next, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("switch name table: %w", err)
	}
	p.active = 1 - p.active
	// Inserts counted from here on land in the new table.
	if n, err := p.nameInserts(); err == nil {
		p.insertsAtSwap = n
	}
	return p.drainTable(old, func(k *dnsNameKey, v *dnsNameValue) {
		p.slots.noteDrained(k, v)
		fn(k, v)
	})
}

// drainBatch is how many entries one batch syscall moves (~312 KiB of values).
const drainBatch = 1024

func (p *DNSProbe) drainTable(m *ebpf.Map, fn func(k *dnsNameKey, v *dnsNameValue)) error {
	if p.batchKeys == nil {
		p.batchKeys = make([]dnsNameKey, drainBatch)
		p.batchVals = make([]dnsNameValue, drainBatch)
	}
	keys, vals := p.batchKeys, p.batchVals
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return p.drainTableSlow(m, fn)
		}
		if err != nil {
			return fmt.Errorf("drain name table: %w", err)
		}
	}
}

// drainTableSlow is the fallback for kernels without batch operations
// (before 5.6). The table has no writer, so iterate-then-delete is exact.
func (p *DNSProbe) drainTableSlow(m *ebpf.Map, fn func(k *dnsNameKey, v *dnsNameValue)) error {
	var key dnsNameKey
	var val dnsNameValue
	var seen []dnsNameKey
	it := m.Iterate()
	for it.Next(&key, &val) {
		fn(&key, &val)
		seen = append(seen, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("drain name table: %w", err)
	}
	for _, k := range seen {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("drain name table: %w", err)
		}
	}
	return nil
}

// Stats returns the probe's health counters and map fill levels.
func (p *DNSProbe) Stats() (ProbeStats, error) {
	var s ProbeStats
	var counters [statMax]uint64
	for i := range counters {
		var perCPU []uint64
		if err := p.objs.ProbeStats.Lookup(uint32(i), &perCPU); err != nil {
			return s, fmt.Errorf("read probe stats: %w", err)
		}
		for _, v := range perCPU {
			counters[i] += v
		}
	}
	s.PodOverflow = counters[statPodOverflow]
	s.NameOverflow = counters[statNameOverflow]
	s.InflightInserted = counters[statInflightInserts]
	s.InflightDuplicates = counters[statInflightDuplicates]
	s.InflightMatched = counters[statInflightMatched]
	s.UnmatchedResponses = counters[statUnmatchedResponses]
	s.Malformed = counters[statMalformed]
	s.NotParsed = counters[statNotParsed]
	s.DNSMessages = counters[statDNSMessages]
	s.InflightEvicted = counters[statInflightEvicted]
	s.InflightExpired = counters[statInflightExpired]

	p.mu.Lock()
	names := p.nameTables[p.active]
	s.NameSlots = MapFill{Entries: p.slots.owned(), Max: uint32(p.slots.slots())}
	p.mu.Unlock()
	var err error
	if s.Pods, err = fill(p.objs.PodStats); err != nil {
		return s, err
	}
	if s.Names, err = fill(names); err != nil {
		return s, err
	}
	if s.Inflight, err = p.inflightFill(); err != nil {
		return s, err
	}
	p.slotMu.Lock()
	s.PodSlots.Max = uint32(len(p.slotOwner))
	for i, owner := range p.slotOwner {
		if owner != 0 {
			s.PodSlots.Entries++
			if p.slotShift[i] > 0 {
				s.LatencySampledPods++
			}
		}
	}
	p.slotMu.Unlock()
	return s, nil
}

// NamedMapFill is the fill level of one kernel map, by the map's name in
// Status and metrics.
type NamedMapFill struct {
	Name string
	MapFill
}

// Maps lists the fill levels by map name.
func (s ProbeStats) Maps() []NamedMapFill {
	return []NamedMapFill{{"pod_stats", s.Pods}, {"pod_slots", s.PodSlots}, {"names", s.Names}, {"name_slots", s.NameSlots}, {"inflight", s.Inflight}}
}

// inflightTimeout and inflightWays mirror INFLIGHT_TIMEOUT_NS and
// INFLIGHT_WAYS in dns.c.
const (
	inflightTimeout = 10 * time.Second
	inflightWays    = 4
)

// inflightFill counts the slots holding a query sent less than
// inflightTimeout ago (bpf_ktime_get_ns is CLOCK_MONOTONIC).
func (p *DNSProbe) inflightFill() (MapFill, error) {
	m := p.objs.Inflight
	f := MapFill{Max: m.MaxEntries() * inflightWays}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return f, err
	}
	now := uint64(ts.Nano())
	keys := make([]uint32, 1024)
	vals := make([]dnsInflightSet, 1024)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for _, set := range vals[:n] {
			for _, v := range set.Way {
				if v.SentNs != 0 && now-v.SentNs < uint64(inflightTimeout) {
					f.Entries++
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return f, nil
		}
		if err != nil {
			return f, fmt.Errorf("count pending queries: %w", err)
		}
	}
}

// fill counts a map's entries by walking its keys (the kernel keeps no
// cheap count); it is meant for periodic health reporting, not hot paths.
func fill(m *ebpf.Map) (MapFill, error) {
	f := MapFill{Max: m.MaxEntries()}
	var prev any // nil: start from the first key
	for {
		next, err := m.NextKeyBytes(prev)
		if err != nil {
			return f, fmt.Errorf("count entries of map %s: %w", m, err)
		}
		if next == nil {
			return f, nil
		}
		f.Entries++
		prev = next
		if f.Entries >= f.Max { // LRU/hash maps change under us; never loop forever
			return f, nil
		}
	}
}
