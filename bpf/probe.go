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
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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
	// DefaultDNSTimeout is Options.DNSTimeout's default: the resolver's own
	// default timeout (resolv.conf(5) "timeout:5").
	DefaultDNSTimeout = 5 * time.Second
	// maxDNSTimeout bounds Options.DNSTimeout.
	maxDNSTimeout = 5 * time.Minute
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
	// DNSTimeout is how long after it was sent a query without its answer
	// counts as timed out (PodCounters.Timeouts); 0 means DefaultDNSTimeout.
	DNSTimeout time.Duration
	// NoEarlyDrain turns off draining the name table early when it fills
	// between two DrainNames calls (tests of the overflow accounting).
	NoEarlyDrain bool
	// Chained loads the programs without attaching them: a TCP probe loaded next with
	// TCPOptions.DNS runs them after its own (one program dispatch a packet instead of
	// two), or Attach attaches them when there is no TCP probe after all.
	Chained bool
}

// Attachment describes one program attached by the probe.
type Attachment struct {
	Program string // program name in the object, e.g. "dns_egress"
	Hook    string // e.g. "cgroup_skb/egress"
	Target  string // the cgroup directory
	Err     error  // nil when attached
}

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

	insertsBuf       []uint64 // per-CPU insert counts, earlyDrainLoop's
	insertsBufLocked []uint64 // the same, for callers holding mu

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
	// slotPrevShift[i] is the shift before the last change, kept in the
	// kernel (pod_slot.prev_sample_shift) until slotShiftAt[i] +
	// DNSTimeout, when the queries sent under it are answered or timed out.
	slotPrevShift []uint32
	slotShiftAt   []time.Time
	// timeouts[id] is the last Timeouts ReadPods returned for cgroup id:
	// the sum it reports (kernel count + queries still waiting past the
	// timeout) never goes down, see ReadPods.
	timeouts map[uint64]uint64

	traceMu sync.Mutex // serialises SetTraced
	rateAt  time.Time
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

// Attach attaches the programs of a probe loaded with Options.Chained to its cgroup root,
// for when no TCP probe runs them (it did not load, or is off). Call it before serving:
// it is not safe for use concurrently with Attachments.
func (p *DNSProbe) Attach() error {
	if len(p.links) > 0 {
		return nil
	}
	p.attachments = nil
	return p.attach()
}

// chainedFrom records that the TCP programs named run this probe's programs.
func (p *DNSProbe) chainedFrom(egress, ingress string) {
	p.attachments = []Attachment{
		{Program: "dns_egress", Hook: "cgroup_skb/egress (tail call from " + egress + ")", Target: p.opts.CgroupRoot},
		{Program: "dns_ingress", Hook: "cgroup_skb/ingress (tail call from " + ingress + ")", Target: p.opts.CgroupRoot},
	}
}

// Attachments lists the programs attached by LoadDNS (or run by the TCP probe's, see
// Options.Chained).
func (p *DNSProbe) Attachments() []Attachment {
	return append([]Attachment(nil), p.attachments...)
}
