package daemon

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/isoobs/isoobs/daemon/podmeta"
	"github.com/isoobs/isoobs/daemon/window"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// Merging Hubble into the probe's rows. Hubble pods are subjects of their own (key
// "hubble:<ns>/<pod>", hub != nil) so windows, since-stream-start baselines and grouping work
// unchanged. Each tick links every Hubble subject to the eBPF subject of the same pod
// (namespace/name from the Kubernetes API) as its peer. A frame over both sources shows the
// eBPF subject with its peer's identity, policy denials and DNS proxy latency, and leaves the
// linked Hubble subject out, so a query seen by both counts once; Hubble subjects without a
// peer are rows of their own with sources=[hubble].

// hubbleInfo is what a Hubble subject knows beyond its counters.
type hubbleInfo struct {
	key      hubble.PodKey
	identity uint32
	node     string
	last     counters // the aggregator's cumulative counters at the previous tick
	seenTick uint64
}

// hubbleFeed is the collector's side of the Hubble subscription.
type hubbleFeed struct {
	agg      *hubble.Aggregator
	client   *hubble.Client
	subjects map[hubble.PodKey]*subject
	// Pods over MaxTrackedPods and name increments of pods without a subject.
	untrackedPods, droppedNames uint64
	// http counts the L7 HTTP flows for top http (daemon/http.go).
	http *httpAgg
}

func newHubbleFeed(cfg *Config) (*hubbleFeed, error) {
	httpCounts := newHTTPAgg(cfg)
	agg := hubble.NewAggregator(hubble.AggregatorConfig{MaxPods: cfg.MaxTrackedPods, MaxPendingNames: 8 * cfg.NamesPerNode, OnHTTP: httpCounts.observe})
	hc := cfg.Hubble
	if hc.Logger == nil {
		hc.Logger = cfg.Logger
	}
	client, err := hubble.NewClient(hc, agg)
	if err != nil {
		return nil, err
	}
	return &hubbleFeed{agg: agg, client: client, subjects: map[hubble.PodKey]*subject{}, http: httpCounts}, nil
}

// hubbleCounters are a Hubble pod's DNS counters in the probe's layout; the latency histogram
// holds the DNS proxy's latency (moved aside before rows are built).
func hubbleCounters(d *hubble.DNS) counters {
	return counters{
		Queries: d.Queries, Responses: d.Responses, Rcode: d.Rcode,
		PolicyDenied: d.PolicyDenied, LatencyLog2US: d.ProxyLatencyLog2US,
	}
}

// tickHubble folds what Hubble reported since the last tick into the Hubble subjects and links
// them to the eBPF subjects of the same pods. Called with c.mu held.
func (c *collector) tickHubble(tick uint64) {
	h := c.hub
	if h == nil {
		return
	}
	h.http.record(tick, c.clock.Layout()) // top http --since (http_history.go)
	h.agg.ReadPods(func(p *hubble.PodStats) {
		s := h.subjects[p.PodKey]
		if s == nil {
			if len(h.subjects) >= c.cfg.MaxTrackedPods {
				h.untrackedPods++
				return
			}
			s = &subject{
				key:    "hubble:" + p.PodKey.String(),
				series: window.NewSeriesLayout[rateSample](c.clock.Layout(), c.tickNo),
				names:  newNameSummary(c.cfg.NamesPerPod),
				hub:    &hubbleInfo{key: p.PodKey},
			}
			h.subjects[p.PodKey] = s
			c.subjects[s.key] = s
		}
		cur := hubbleCounters(&p.DNS)
		d := deltaSince(&cur, &s.hub.last)
		s.hub.last = cur
		s.total.add(&d)
		s.hub.identity, s.hub.node, s.hub.seenTick = p.Identity, p.Node, tick
		if s.meta == nil || s.meta.Workload != p.Workload || s.meta.WorkloadKind != p.WorkloadKind || len(s.meta.Labels) == 0 && len(p.Labels) > 0 {
			s.meta = &podmeta.Pod{Name: p.Pod, Namespace: p.Namespace, Node: p.Node, Labels: hubble.LabelMap(p.Labels), Workload: p.Workload, WorkloadKind: p.WorkloadKind}
		}
	})
	h.agg.DrainNames(func(k hubble.PodKey, name string, q, nx uint64) {
		s := h.subjects[k]
		if s == nil {
			h.droppedNames += q
			return
		}
		s.names.Add(name, q, nx)
		for sink := range c.sinks {
			sink.add(s.key, name, q, nx)
		}
	})
	// Link peers: an eBPF subject and a Hubble subject of the same pod.
	for _, s := range h.subjects {
		s.peer = nil
	}
	for _, s := range c.subjects {
		if s.hub != nil {
			continue
		}
		s.peer = nil
		if s.meta == nil {
			continue
		}
		if hs := h.subjects[hubble.PodKey{Namespace: s.meta.Namespace, Pod: s.meta.Name}]; hs != nil {
			s.peer, hs.peer = hs, s
		}
	}
}

// gcHubble forgets Hubble pods without flows for the retention window, in the aggregator and
// here together (a subject re-created for a still-aggregated pod would count it twice).
func (c *collector) gcHubble(now time.Time) {
	h := c.hub
	if h == nil {
		return
	}
	h.agg.Forget(now.Add(-c.cfg.Retention))
	for k, s := range h.subjects {
		if s.hub.seenTick == c.tickNo {
			continue
		}
		if _, ok := h.agg.Pod(k); ok {
			continue
		}
		delete(h.subjects, k)
		delete(c.subjects, s.key)
		if s.peer != nil {
			s.peer.peer = nil
		}
		c.subjectsDeleted++
		for sink := range c.sinks {
			delete(sink.perSubject, s.key)
		}
	}
}

// ebpfSubjects is how many subjects come from the probe (the MaxTrackedPods budget).
func (c *collector) ebpfSubjects() int {
	if c.hub == nil {
		return len(c.subjects)
	}
	return len(c.subjects) - len(c.hub.subjects)
}

// wantSubject says whether a frame over source shows s as a row of its own.
func wantSubject(source isoobsv1.Source, s *subject) bool {
	switch source {
	case isoobsv1.Source_SOURCE_EBPF:
		return s.hub == nil
	case isoobsv1.Source_SOURCE_HUBBLE:
		return s.hub != nil
	default:
		return s.hub == nil || s.peer == nil
	}
}

// hubblePart is a Hubble subject's share of a row: proxy latency, policy denials, identity.
type hubblePart struct {
	identity     uint32
	node         string
	policyDenied uint64
	deniedRate   uint64
	proxyLatency [len(counters{}.LatencyLog2US)]uint64
}

// splitHubble moves a Hubble subject's proxy latency out of its counters (so it never mixes
// with the probe's latency) into the part's Hubble share.
func splitHubble(s *subject, tot *counters, rate *rateSample) *hubblePart {
	hp := &hubblePart{identity: s.hub.identity, node: s.hub.node, policyDenied: tot.PolicyDenied, deniedRate: rate[rPolicyDenied], proxyLatency: tot.LatencyLog2US}
	tot.LatencyLog2US = [len(counters{}.LatencyLog2US)]uint64{}
	return hp
}

// addHubble adds a part's Hubble share to its group.
func (g *group) addHubble(p *part) {
	if p.s.hub == nil {
		g.ebpf = true
	}
	hp := p.hub
	if hp == nil {
		return
	}
	g.hubble = true
	if p.s.hub == nil {
		// The peer's denials and rates join the eBPF counts (the probe has none of its own).
		g.tot.PolicyDenied += hp.policyDenied
		g.rate[rPolicyDenied] += hp.deniedRate
	}
	for i, n := range hp.proxyLatency {
		g.proxyLatency[i] += n
	}
	if g.identity == 0 {
		g.identity = hp.identity
	}
	if g.hubbleNode == "" {
		g.hubbleNode = hp.node
	}
}

// hubbleRow fills a row's Hubble fields.
func hubbleRow(r *isoobsv1.DNSRow, g *group, seconds float64) {
	r.PolicyDenied = g.tot.PolicyDenied
	if seconds > 0 {
		r.PolicyDeniedRate = float64(g.rate[rPolicyDenied]) / seconds
	}
	r.Sources = r.Sources[:0]
	if g.ebpf {
		r.Sources = append(r.Sources, "ebpf")
	}
	if g.hubble {
		r.Sources = append(r.Sources, "hubble")
		r.Identity = g.identity
		r.ProxyLatencyLog2Us = append([]uint64(nil), g.proxyLatency[:]...)
		r.ProxyLatencyP50Ms = topspec.Log2Quantile(g.proxyLatency[:], 0.50)
		r.ProxyLatencyP99Ms = topspec.Log2Quantile(g.proxyLatency[:], 0.99)
		if !g.ebpf && g.hubbleNode != "" {
			// Through Hubble Relay a pod may live on another node.
			r.Node = g.hubbleNode
		}
	}
	if g.pods > 1 {
		// Identity is per pod; a group of several keeps it only if all agree (not tracked).
		r.Identity = 0
	}
}

// hubbleStatus describes the subscription for Status.
func (d *Daemon) hubbleStatus() *isoobsv1.HubbleStatus {
	c := d.coll
	if c.hub == nil {
		return &isoobsv1.HubbleStatus{Error: "Hubble disabled (--hubble-server=off)"}
	}
	st := c.hub.client.Status()
	ac := c.hub.agg.Counters()
	hs := &isoobsv1.HubbleStatus{
		Enabled: true, Server: st.Server, Connected: st.Connected, Error: st.LastError,
		FlowsReceived: st.FlowsReceived, FlowsPerSecond: st.FlowsPerSecond,
		LostEvents: ac.LostEvents, LostEventsBySource: ac.LostBySource, Reconnects: st.Reconnects,
		SkippedFlows: ac.Skipped, Pods: uint32(ac.Pods),
		DnsFlows: ac.DNSFlows, DropFlows: ac.DropFlows, HttpFlows: ac.HTTPFlows,
	}
	if !st.ConnectedSince.IsZero() && st.Connected {
		hs.ConnectedSince = timestamppb.New(st.ConnectedSince)
	}
	if !st.LastErrorAt.IsZero() {
		hs.ErrorTime = timestamppb.New(st.LastErrorAt)
	}
	if st.Attempts == 0 && st.LastError == "" {
		hs.Error = "not connected yet"
	}
	return hs
}

// HubbleAggregates are Hubble's per-pod drop and HTTP aggregates (for top drops / top http);
// nil when Hubble is disabled.
func (d *Daemon) HubbleAggregates() *hubble.Aggregator {
	if d.coll.hub == nil {
		return nil
	}
	return d.coll.hub.agg
}
