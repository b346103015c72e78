// Package hubble subscribes to Hubble's observer API (the node-local socket or Hubble Relay) and
// aggregates the flows the isoobs daemon merges into its views: DNS L7 flows per client pod
// (queries by name and rcode, DNS denied by policy, DNS proxy latency), drops by reason and pod,
// and HTTP L7 flows (requests, status classes, latency). Memory is bounded like the eBPF path:
// a fixed number of pods, a fixed number of pending name increments per drain.
package hubble

import (
	"math/bits"
	"strings"
	"sync"
	"time"

	"github.com/isoobs/isoobs/dnsname"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
)

// LatencyBuckets is the length of the log2 µs latency histograms; the same layout as the eBPF
// probe's (bucket i counts [2^i, 2^(i+1)) µs) so both can be shown and merged alike.
const LatencyBuckets = 32

// Response code slots of DNS.Rcode, in the eBPF probe's order.
const (
	RcodeNoError = iota
	RcodeNXDomain
	RcodeServFail
	RcodeRefused
	RcodeOther
	NumRcodeSlots
)

// PodKey names a pod the way Hubble does.
type PodKey struct {
	Namespace, Pod string
}

func (k PodKey) String() string { return k.Namespace + "/" + k.Pod }

// Endpoint is what Hubble tells about a pod besides its counts.
type Endpoint struct {
	PodKey
	Workload, WorkloadKind string
	// Identity is the Cilium security identity.
	Identity uint32
	// Labels in Cilium's "source:key=value" form (k8s:app=crawler).
	Labels []string
	// Node is the node the last flow of this pod was observed on.
	Node string
}

// DNS counts the DNS traffic of one client pod as Hubble's DNS proxy saw it.
type DNS struct {
	// Queries are DNS requests, including those denied by policy.
	Queries   uint64
	Responses uint64
	Rcode     [NumRcodeSlots]uint64
	// PolicyDenied are DNS requests dropped by policy: L7 DNS requests with verdict DROPPED,
	// and UDP/TCP packets to port 53 dropped with a policy drop reason.
	PolicyDenied uint64
	// ProxyLatencyLog2US is the DNS proxy's request→response latency (Layer7.latency_ns).
	ProxyLatencyLog2US [LatencyBuckets]uint64
}

// HTTP counts HTTP L7 flows of one pod.
type HTTP struct {
	// Requests this pod sent, responses it received and their status classes (index code/100;
	// 0 holds responses without a code).
	Requests, Responses uint64
	StatusClass         [6]uint64
	LatencyLog2US       [LatencyBuckets]uint64
	// Served counts requests this pod received.
	Served uint64
}

// PodStats is everything aggregated for one pod, cumulative since it was first seen.
type PodStats struct {
	Endpoint
	DNS  DNS
	HTTP HTTP
	// Drops of packets to or from this pod, by Hubble's drop reason name.
	Drops         uint64
	DropsByReason map[string]uint64
	FirstSeen     time.Time
	LastSeen      time.Time
}

// Counters say what the aggregator did with every flow: nothing is silently ignored.
type Counters struct {
	Flows      uint64 // flows handed to Observe
	DNSFlows   uint64
	DropFlows  uint64
	HTTPFlows  uint64
	Ignored    uint64 // well-formed flows of no interest (e.g. forwarded L3/L4)
	LostEvents uint64 // events Hubble reported lost (LostEvent.num_events_lost)
	// Skipped flows, by why: no_source_pod, no_l7_record, unknown_verdict, unknown_l7_type,
	// other_l7, nil_flow.
	Skipped map[string]uint64
	// PodsOverflow counts flows of pods beyond the pod limit (counted nowhere else);
	// NamesOverflow counts name increments lost because the pending name table was full.
	PodsOverflow, NamesOverflow uint64
	// PodsForgotten counts pods dropped after going idle.
	PodsForgotten uint64
	Pods          int
	// DropsByReason is node-wide, including drops without a pod endpoint.
	DropsByReason map[string]uint64
	// LostBySource splits LostEvents by LostEventSource name.
	LostBySource map[string]uint64
}

// Skip reasons.
const (
	SkipNilFlow        = "nil_flow"
	SkipNoSourcePod    = "no_source_pod"
	SkipNoL7Record     = "no_l7_record"
	SkipUnknownVerdict = "unknown_verdict"
	SkipUnknownL7Type  = "unknown_l7_type"
	SkipOtherL7        = "other_l7"
)

// AggregatorConfig bounds an Aggregator. Zero values mean the defaults.
type AggregatorConfig struct {
	// MaxPods bounds the pods with counters. Default 1024.
	MaxPods int
	// MaxPendingNames bounds the (pod, name) increments kept between two DrainNames. Default 8192.
	MaxPendingNames int
	// MaxDropReasons bounds the reasons kept per pod (Hubble has ~200). Default 64.
	MaxDropReasons int
	// OnHTTP, if set, is given every L7 HTTP flow (REQUEST or RESPONSE record) as it is
	// observed, under the aggregator's lock: it must not call back into the Aggregator.
	OnHTTP func(f *flowpb.Flow)
}

type nameKey struct {
	pod  PodKey
	name string
}

type nameDelta struct{ queries, nxdomain uint64 }

// Aggregator folds flows into per-pod counters. It is safe for concurrent use: the Hubble client
// calls Observe while the daemon's collector reads.
type Aggregator struct {
	cfg AggregatorConfig

	mu       sync.Mutex
	pods     map[PodKey]*PodStats
	pending  map[nameKey]nameDelta
	counters Counters
}

// NewAggregator returns an empty aggregator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.MaxPods <= 0 {
		cfg.MaxPods = 1024
	}
	if cfg.MaxPendingNames <= 0 {
		cfg.MaxPendingNames = 8192
	}
	if cfg.MaxDropReasons <= 0 {
		cfg.MaxDropReasons = 64
	}
	return &Aggregator{
		cfg: cfg, pods: map[PodKey]*PodStats{}, pending: map[nameKey]nameDelta{},
		counters: Counters{Skipped: map[string]uint64{}, DropsByReason: map[string]uint64{}, LostBySource: map[string]uint64{}},
	}
}

// podOf returns the pod of an endpoint, or false when the endpoint is not a pod (world, host,
// a remote node, or missing).
func podOf(ep *flowpb.Endpoint) (PodKey, bool) {
	if ep == nil || ep.GetPodName() == "" {
		return PodKey{}, false
	}
	return PodKey{Namespace: ep.GetNamespace(), Pod: ep.GetPodName()}, true
}

// stats finds or creates a pod's counters; nil when the pod limit is reached.
func (a *Aggregator) stats(ep *flowpb.Endpoint, node string, now time.Time) *PodStats {
	k, _ := podOf(ep)
	p := a.pods[k]
	if p == nil {
		if len(a.pods) >= a.cfg.MaxPods {
			a.counters.PodsOverflow++
			return nil
		}
		p = &PodStats{Endpoint: Endpoint{PodKey: k}, FirstSeen: now}
		a.pods[k] = p
	}
	p.LastSeen = now
	// Identity and workload may change (relabeling); the latest flow wins.
	if id := ep.GetIdentity(); id != 0 {
		p.Identity = id
	}
	if w := ep.GetWorkloads(); len(w) > 0 {
		p.Workload, p.WorkloadKind = w[0].GetName(), w[0].GetKind()
	}
	if l := ep.GetLabels(); len(l) > 0 && !equalStrings(l, p.Labels) {
		p.Labels = append([]string(nil), l...)
	}
	if node != "" {
		p.Node = node
	}
	return p
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (a *Aggregator) skip(why string) { a.counters.Skipped[why]++ }

func (a *Aggregator) addName(k PodKey, name string, q, nx uint64) {
	// Cilium's proxy reports names in presentation format; a byte outside it must still not
	// reach a terminal raw.
	name = dnsname.Sanitize(strings.TrimSuffix(name, "."))
	if name == "" {
		return
	}
	nk := nameKey{k, name}
	d, ok := a.pending[nk]
	if !ok && len(a.pending) >= a.cfg.MaxPendingNames {
		a.counters.NamesOverflow += q
		return
	}
	d.queries += q
	d.nxdomain += nx
	a.pending[nk] = d
}

// Observe folds one flow in. Flows that cannot be attributed (no pod endpoint, no L7 record
// where one is needed, an unknown verdict) are skipped and counted by reason.
func (a *Aggregator) Observe(f *flowpb.Flow) {
	a.ObserveAt(f, time.Now())
}

// ObserveAt is Observe with the observation time given (for tests and replays).
func (a *Aggregator) ObserveAt(f *flowpb.Flow, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counters.Flows++
	if f == nil {
		a.skip(SkipNilFlow)
		return
	}
	v := f.GetVerdict()
	if _, known := flowpb.Verdict_name[int32(v)]; !known || v == flowpb.Verdict_VERDICT_UNKNOWN {
		a.skip(SkipUnknownVerdict)
		return
	}
	l7 := f.GetL7()
	if f.GetType() == flowpb.FlowType_L7 || l7 != nil {
		a.observeL7(f, l7, now)
		return
	}
	if v == flowpb.Verdict_DROPPED {
		a.observeDrop(f, now)
		return
	}
	a.counters.Ignored++
}

func (a *Aggregator) observeL7(f *flowpb.Flow, l7 *flowpb.Layer7, now time.Time) {
	if l7 == nil {
		a.skip(SkipNoL7Record)
		return
	}
	var reply bool
	switch l7.GetType() {
	case flowpb.L7FlowType_REQUEST:
	case flowpb.L7FlowType_RESPONSE:
		reply = true
	default:
		a.skip(SkipUnknownL7Type)
		return
	}
	// The client of a request is its source; a response flows back to it.
	client := f.GetSource()
	if reply {
		client = f.GetDestination()
	}
	switch {
	case l7.GetDns() != nil:
		a.counters.DNSFlows++
		if _, ok := podOf(client); !ok {
			a.skip(SkipNoSourcePod)
			return
		}
		p := a.stats(client, f.GetNodeName(), now)
		if p == nil {
			return
		}
		dns := l7.GetDns()
		if !reply {
			p.DNS.Queries++
			if f.GetVerdict() == flowpb.Verdict_DROPPED {
				p.DNS.PolicyDenied++
			}
			a.addName(p.PodKey, dns.GetQuery(), 1, 0)
			return
		}
		p.DNS.Responses++
		slot := rcodeSlot(dns.GetRcode())
		p.DNS.Rcode[slot]++
		if slot == RcodeNXDomain {
			a.addName(p.PodKey, dns.GetQuery(), 0, 1)
		}
		if ns := l7.GetLatencyNs(); ns > 0 {
			p.DNS.ProxyLatencyLog2US[latencyBucket(ns)]++
		}
	case l7.GetHttp() != nil:
		a.counters.HTTPFlows++
		if a.cfg.OnHTTP != nil {
			a.cfg.OnHTTP(f)
		}
		if _, ok := podOf(client); !ok {
			a.skip(SkipNoSourcePod)
			return
		}
		p := a.stats(client, f.GetNodeName(), now)
		if p == nil {
			return
		}
		if !reply {
			p.HTTP.Requests++
			if server, ok := podOf(f.GetDestination()); ok && server != p.PodKey {
				if s := a.stats(f.GetDestination(), f.GetNodeName(), now); s != nil {
					s.HTTP.Served++
				}
			}
			return
		}
		p.HTTP.Responses++
		class := l7.GetHttp().GetCode() / 100
		if class > 5 {
			class = 0
		}
		p.HTTP.StatusClass[class]++
		if ns := l7.GetLatencyNs(); ns > 0 {
			p.HTTP.LatencyLog2US[latencyBucket(ns)]++
		}
	default:
		a.skip(SkipOtherL7)
	}
}

func (a *Aggregator) observeDrop(f *flowpb.Flow, now time.Time) {
	a.counters.DropFlows++
	reason := f.GetDropReasonDesc().String()
	if len(a.counters.DropsByReason) < a.cfg.MaxDropReasons || a.counters.DropsByReason[reason] > 0 {
		a.counters.DropsByReason[reason]++
	}
	// An ingress drop belongs to the receiving pod, anything else to the sender.
	ep := f.GetSource()
	if f.GetTrafficDirection() == flowpb.TrafficDirection_INGRESS {
		ep = f.GetDestination()
	}
	if _, ok := podOf(ep); !ok {
		if other := f.GetDestination(); ep == f.GetSource() {
			ep = other
		} else {
			ep = f.GetSource()
		}
	}
	if _, ok := podOf(ep); !ok {
		return // counted node-wide only
	}
	p := a.stats(ep, f.GetNodeName(), now)
	if p == nil {
		return
	}
	p.Drops++
	if p.DropsByReason == nil {
		p.DropsByReason = map[string]uint64{}
	}
	if len(p.DropsByReason) < a.cfg.MaxDropReasons || p.DropsByReason[reason] > 0 {
		p.DropsByReason[reason]++
	}
	// A query to port 53 dropped by policy at L3/L4 never reached the DNS proxy: it is DNS
	// denied by policy all the same.
	if isPolicyDrop(f.GetDropReasonDesc()) && dnsPort(f) {
		if client, ok := podOf(f.GetSource()); ok && client == p.PodKey {
			p.DNS.Queries++
			p.DNS.PolicyDenied++
		}
	}
}

func isPolicyDrop(r flowpb.DropReason) bool {
	switch r {
	case flowpb.DropReason_POLICY_DENIED, flowpb.DropReason_POLICY_DENY, flowpb.DropReason_AUTH_REQUIRED:
		return true
	}
	return false
}

func dnsPort(f *flowpb.Flow) bool {
	l4 := f.GetL4()
	return l4.GetUDP().GetDestinationPort() == 53 || l4.GetTCP().GetDestinationPort() == 53
}

func rcodeSlot(rcode uint32) int {
	switch rcode {
	case 0:
		return RcodeNoError
	case 3:
		return RcodeNXDomain
	case 2:
		return RcodeServFail
	case 5:
		return RcodeRefused
	default:
		return RcodeOther
	}
}

// latencyBucket is the log2 µs bucket of a latency in nanoseconds.
func latencyBucket(ns uint64) int {
	us := ns / 1000
	if us == 0 {
		return 0
	}
	b := bits.Len64(us) - 1
	if b >= LatencyBuckets {
		b = LatencyBuckets - 1
	}
	return b
}

// ObserveLost records a LostEvent notice from Hubble.
func (a *Aggregator) ObserveLost(ev *flowpb.LostEvent) {
	if ev == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counters.LostEvents += ev.GetNumEventsLost()
	a.counters.LostBySource[ev.GetSource().String()] += ev.GetNumEventsLost()
}

// ReadPods calls fn for every pod, under the aggregator's lock: fn must not keep p.
func (a *Aggregator) ReadPods(fn func(p *PodStats)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		fn(p)
	}
}

// Pod returns a copy of one pod's counters.
func (a *Aggregator) Pod(k PodKey) (PodStats, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pods[k]
	if !ok {
		return PodStats{}, false
	}
	c := *p
	c.Labels = append([]string(nil), p.Labels...)
	c.DropsByReason = make(map[string]uint64, len(p.DropsByReason))
	for r, n := range p.DropsByReason {
		c.DropsByReason[r] = n
	}
	return c, true
}

// DrainNames hands out and forgets the (pod, name) increments seen since the last drain.
func (a *Aggregator) DrainNames(fn func(pod PodKey, name string, queries, nxdomain uint64)) {
	a.mu.Lock()
	pending := a.pending
	a.pending = make(map[nameKey]nameDelta, len(pending))
	a.mu.Unlock()
	for k, d := range pending {
		fn(k.pod, k.name, d.queries, d.nxdomain)
	}
}

// Forget drops pods without a flow since before; their names go with the next drain.
func (a *Aggregator) Forget(before time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k, p := range a.pods {
		if p.LastSeen.Before(before) {
			delete(a.pods, k)
			n++
		}
	}
	a.counters.PodsForgotten += uint64(n)
	return n
}

// Counters returns a copy of the aggregator's counters.
func (a *Aggregator) Counters() Counters {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.counters
	c.Pods = len(a.pods)
	c.Skipped = copyMap(a.counters.Skipped)
	c.DropsByReason = copyMap(a.counters.DropsByReason)
	c.LostBySource = copyMap(a.counters.LostBySource)
	return c
}

// SkippedTotal sums Skipped.
func (c *Counters) SkippedTotal() uint64 {
	var n uint64
	for _, v := range c.Skipped {
		n += v
	}
	return n
}

func copyMap(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// LabelMap turns Cilium's "source:key=value" labels into Kubernetes pod labels (k8s: source
// only, without Cilium's io.kubernetes.pod.* and io.cilium.* additions).
func LabelMap(labels []string) map[string]string {
	var out map[string]string
	for _, l := range labels {
		rest, ok := strings.CutPrefix(l, "k8s:")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(rest, "=")
		if k == "" || strings.HasPrefix(k, "io.kubernetes.pod.") || strings.HasPrefix(k, "io.cilium.") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}
